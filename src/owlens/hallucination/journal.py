"""An append-only JSON Lines file that a killed run can resume without losing or duplicating a row.

Each row is written as one line and flushed before the next is computed. On reopening, the complete lines
(those ending in a newline) are read back and a torn last line is cut off, so the file always holds whole
rows and a rerun only redoes what was never written completely.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["Journal", "complete_rows"]


def complete_rows(path: str | Path) -> tuple[list[dict], int]:
    """Rows of the complete lines of ``path`` and the byte length they span (a torn tail is excluded)."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    rows, length = [], 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break  # killed mid-write: this row was never finished
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: a complete line that is not JSON ({err}); this is not a "
                                     "file the runner wrote, or it was edited: move it away to start afresh") from err
            length += len(line)
    return rows, length


class Journal:
    """``with Journal(path) as journal: journal.rows`` (already written) … ``journal.append(row)``."""

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync  # flush reaches the OS (safe against a kill); fsync also against a power cut
        self.rows: list[dict] = []
        self._handle = None

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows, length = complete_rows(self.path)
        if self.path.is_file() and self.path.stat().st_size != length:
            os.truncate(self.path, length)  # drop the torn last line before appending after it
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def append(self, row: dict) -> None:
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def __exit__(self, *exc) -> None:
        self._handle.close()
        self._handle = None
