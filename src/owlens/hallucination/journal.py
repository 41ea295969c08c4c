"""An append-only JSON Lines file that a killed run can resume without losing or duplicating a row.

Each row is written as one line and flushed before the next is computed. On reopening, the complete lines
(those ending in a newline) are read back and a torn last line is cut off, so the file always holds whole
rows and a rerun only redoes what was never written completely.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from owlens.persist.jsonl import read_jsonl

__all__ = ["Journal"]


class Journal:
    """``with Journal(path) as journal: journal.rows`` (already written) … ``journal.append(row)``."""

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync  # flush reaches the OS (safe against a kill); fsync also against a power cut
        self.rows: list[dict] = []
        self._handle = None

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows, length = read_jsonl(self.path)
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
