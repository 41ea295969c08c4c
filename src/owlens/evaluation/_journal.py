"""Per-case rows written as they are done, so that a killed evaluation resumes (docs/design.md §7).

The first row of the file is the run's configuration; a rerun with another configuration is refused rather than
mixed into the same file, and one run at a time holds the folder (two would write every case twice). Without a
folder the rows are only kept in memory.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from owlens.hallucination.journal import Journal
from owlens.persist.lock import folder_lock

__all__ = ["CaseJournal"]


class CaseJournal:
    """``with CaseJournal(out_dir, name, config) as j: j.done`` ((kind, cue, index) keys) … ``j.append(row)``."""

    def __init__(self, out_dir: str | Path | None, name: str, config: dict):
        self.config = config
        self._journal = None if out_dir is None else Journal(Path(out_dir) / name)
        self._lock = ExitStack()
        self.rows: list[dict] = []

    @property
    def done(self) -> set[tuple[str, str | None, int]]:
        return {(row["kind"], row.get("cue"), row["index"]) for row in self.rows}

    def __enter__(self) -> CaseJournal:
        if self._journal is None:
            return self
        self._lock.enter_context(folder_lock(self._journal.path.parent))
        try:
            self._journal.__enter__()
        except BaseException:
            self._lock.close()
            raise
        if not self._journal.rows:
            self._journal.append({"config": self.config})
            return self
        header, *self.rows = self._journal.rows
        if header.get("config") != self.config:
            self._journal.__exit__(None, None, None)
            self._lock.close()
            raise ValueError(f"{self._journal.path} holds a run with configuration {header.get('config')}, not "
                             f"{self.config}; pass another --out folder or move that file away")
        return self

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self._journal is not None:
            self._journal.append(row)

    def __exit__(self, *exc) -> None:
        if self._journal is not None:
            self._journal.__exit__(*exc)
            self._lock.close()
