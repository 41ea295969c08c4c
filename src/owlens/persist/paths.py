"""Paths named by files we read (run.json, POPE question files) stay inside the folder they belong to.

A run folder is data someone else may have written: its run.json must not make a report inline
``/etc/passwd`` or ``../../secret.png``. Every relative path it names is resolved (symbolic links included)
and must land inside the folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["OutsideFolderError", "confined"]


class OutsideFolderError(ValueError):
    """A path that is absolute, climbs out with ``..``, or resolves (through a link) outside its folder."""


def confined(root: str | Path, name: str, *, what: str = "path") -> Path:
    """``root / name`` resolved, or ``OutsideFolderError`` when ``name`` would leave ``root``.

    ``name`` must be a relative path without ``..`` parts (POSIX or Windows spelling); after resolving links
    the result must still be inside ``root``. ``what`` names the field in the error message.
    """
    if not isinstance(name, str) or not name:
        raise OutsideFolderError(f"{what}: expected a non-empty relative path; received {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        raise OutsideFolderError(f"{what}: expected a path relative to {root}; received the absolute path {name!r}")
    if ".." in posix.parts or ".." in windows.parts:
        raise OutsideFolderError(f"{what}: expected a path inside {root}; received {name!r}, which climbs out "
                                 "with '..'")
    base = Path(root).resolve()
    resolved = (base / name).resolve()
    if resolved != base and base not in resolved.parents:
        raise OutsideFolderError(f"{what}: {name!r} resolves to {resolved}, outside {base} (through a link)")
    return resolved
