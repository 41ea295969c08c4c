"""Atomic file writes: the content goes to ``NAME.partial`` beside the target, then is renamed over it.

A rename within one directory is atomic on POSIX filesystems, so a reader, or a rerun after a kill, finds
either the previous file or the complete new one. The partial file sits in the target's own directory (never
in /tmp) so that the rename never crosses filesystems.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["PARTIAL_SUFFIX", "atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]

PARTIAL_SUFFIX = ".partial"


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, durable: bool = False) -> Iterator[IO]:
    """``with atomic_open(path) as handle: handle.write(...)``: ``path`` appears, complete, when the block ends.

    For content written piece by piece (one JSON line per question). ``mode`` is "w" (UTF-8 text) or "wb";
    ``durable`` also fsyncs before the rename (checkpoints). An exception in the block leaves ``path`` as it
    was and no partial file behind.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"expected mode 'w' or 'wb'; received {mode!r}")
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(partial, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk or a Ctrl-C leaves no stray partial file behind
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; ``durable`` also fsyncs it before the rename (checkpoints)."""
    with atomic_open(path, "wb", durable=durable) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | Path, payload, *, indent: int | None = 2, durable: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n", durable=durable)
