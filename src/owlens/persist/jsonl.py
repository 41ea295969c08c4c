"""Reading JSON Lines that a killed writer may have left with a torn last line.

A row is complete once its newline is written (the writers flush line by line), so the rows are the lines
that end in one; a last line without it is a row whose writer was killed, and is left out. Files from other
tools may end without a final newline: ``keep_unterminated`` keeps such a last line when it parses.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_jsonl"]


def read_jsonl(path: str | Path, *, keep_unterminated: bool = False) -> tuple[list, int]:
    """The rows of ``path``'s complete lines (blank lines skipped) and the bytes those lines span.

    A missing file has no rows. The byte count is where an appender may continue (a torn tail is cut there).
    A complete line that is not JSON raises ValueError naming ``path:line``: only the last line can be torn.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    rows, length = [], 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            terminated = line.endswith(b"\n")
            if not terminated and not keep_unterminated:
                break  # killed mid-write: this row was never finished
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    if not terminated:
                        break
                    shown = line.decode("utf-8", "replace").strip()[:120]
                    raise ValueError(f"{path}:{number}: not a JSON line: {shown!r} ({err}); a file owlens writes "
                                     "holds one JSON value per line: was it edited, or written by another "
                                     "program?") from err
            length += len(line)
    return rows, length
