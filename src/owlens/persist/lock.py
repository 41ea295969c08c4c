"""One writer per run folder: an exclusive ``flock`` on a lock file, with its holder written inside.

Two runs appending to one folder mix their rows, so a second run on a held folder is refused with a message
that names the holder (pid, host, command, start time). The kernel releases a ``flock`` when its process ends,
however it ends, so a lock left by a killed run is no lock at all: the next run takes it and overwrites the
holder text. A run deletes its lock file when it ends, while still holding it; a process that opened the
file just before and locks it just after finds that the name no longer leads to the file it locked, and
starts over, so two processes never hold two files of one name.

Nested use in one process (the CLI locks a folder, the library it calls locks it again) is counted, not
refused: ``flock`` on a second descriptor of the same file would block its own process.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderLockedError", "Holder", "folder_lock", "hold_lock", "lock_beside"]

LOCK_NAME = ".owlens.lock"

# lock file (resolved) -> [descriptor, depth] for the locks this process holds
_HELD: dict[Path, list[int]] = {}


class FolderLockedError(ValueError):
    """Another live process holds the lock; the message names it."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    started: str  # local time, ISO 8601

    @staticmethod
    def me() -> Holder:
        return Holder(os.getpid(), socket.gethostname(), " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                      time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"


def _read_holder(descriptor: int) -> str:
    os.lseek(descriptor, 0, os.SEEK_SET)
    text = os.read(descriptor, 64 * 1024).decode("utf-8", errors="replace")
    try:
        return Holder(**json.loads(text)).describe()
    except (ValueError, TypeError):  # the holder is between taking the lock and writing its name
        return "a process that has not written its name yet"


@contextmanager
def hold_lock(lock_file: str | Path, *, what: str | None = None):
    """Hold an exclusive lock on ``lock_file`` for the block, or raise ``FolderLockedError`` at once.

    ``what`` names the locked thing in the message (default: the lock file's folder).
    """
    path = Path(lock_file).resolve()
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield path
        finally:
            _HELD[path][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(path, what)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(asdict(Holder.me())).encode(), 0)
        _HELD[path] = [descriptor, 1]
        yield path
    finally:
        _HELD.pop(path, None)
        path.unlink(missing_ok=True)  # still locked: see the module docstring
        os.close(descriptor)  # closing releases the flock


def _acquire(path: Path, what: str | None) -> int:
    """A descriptor of ``path`` holding its flock, the name still leading to it; or ``FolderLockedError``."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise FolderLockedError(f"{what or path.parent} is in use by another run ({holder}); wait for it to "
                                    "end, or pass another --out") from None
        try:
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass  # its holder deleted it as we locked it: try the name again
        os.close(descriptor)


def folder_lock(folder: str | Path):
    """The lock of a run folder: ``FOLDER/.owlens.lock``."""
    return hold_lock(Path(folder) / LOCK_NAME, what=str(folder))


def lock_beside(path: str | Path):
    """The lock of a run that writes one file (POPE's answers): ``PATH.lock`` beside it."""
    path = Path(path)
    return hold_lock(path.with_name(path.name + ".lock"), what=str(path))
