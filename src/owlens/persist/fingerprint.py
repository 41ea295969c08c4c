"""What produced a run folder's rows: the weights, the inputs and the settings, stored when the run starts.

A resume appends rows to those already written, so it must be the same computation: resuming a POPE run with
another W, or a bias run after an image was added to a group, gives figures that belong to no single run.
``claim`` writes ``fingerprint.json`` on the first run and, on every later one, refuses any difference,
saying which part (weights, inputs, settings) and which entry differ.

- **weights**: per model role, the SHA-256 of every file in its folder (weights, configs, tokenizer files).
  Hashing gigabytes on every start would cost minutes, so digests are cached by (path, size, mtime) in the
  user's cache folder: an unchanged file is hashed once.
- **inputs**: digests of input files (a question file) and the listing of image files with their size and
  mtime. An image recorded as missing may appear later (its questions are retried); an image that changed,
  or a listing that gained or lost a file, is a difference.
- **settings**: the run's options that change rows, as JSON.

Paths are resolved to absolute ones at start, and are stored for the reader but not compared: a folder of
inputs may move, what matters is that its content did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from owlens.persist.atomic import atomic_write_json

__all__ = ["FINGERPRINT", "Fingerprint", "FingerprintMismatch", "claim", "file_digest", "forget_inputs",
           "image_listing", "model_weights", "weights_of"]

FINGERPRINT = "fingerprint.json"
_FORMAT = "owlens-fingerprint/1"
_CHUNK = 1 << 20


class FingerprintMismatch(ValueError):
    """A resume whose weights, inputs or settings differ from those that wrote the folder's rows."""


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "owlens" / "digests.json"


def _load_cache() -> dict:
    try:
        cache = json.loads(_cache_file().read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_cache_file(), cache, indent=None)
    except OSError:
        pass  # a read-only home costs time (hashing again next run), never correctness


def file_digest(path: str | Path, cache: dict | None = None) -> str:
    """SHA-256 of a file; ``cache`` (path+size+mtime → digest) saves rehashing an unchanged file."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if cache is not None:
        cache[key] = digest.hexdigest()
    return digest.hexdigest()


def _hub_folder(source: str) -> Path | None:
    """The local snapshot of a hub id, when it is cached (the files that would load)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or not a hub id: the id alone is the fingerprint
        return None


def weights_of(models: Mapping[str, str | Path | None]) -> dict:
    """{role: {"source", "files": {relative name: sha256}}} for each model folder (or cached hub id).

    ``models`` is what a model was loaded from (``JointModel.sources``); a model built in memory has none.
    """
    cache = _load_cache()
    weights = {}
    for role, source in models.items():
        if source is None:
            weights[role] = None
            continue
        local = Path(str(source)).expanduser()
        folder = local if local.is_dir() else _hub_folder(str(source))
        files = {} if folder is None else {
            str(p.relative_to(folder)): file_digest(p, cache)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}
        weights[role] = {"source": str(local.resolve()) if local.is_dir() else str(source), "files": files}
    _save_cache(cache)
    return weights


def model_weights(model) -> dict:
    """``weights_of`` the folders ``model`` was loaded from."""
    return weights_of(getattr(model, "sources", None) or {})


def image_listing(paths: Iterable[str | Path], root: str | Path | None = None) -> dict:
    """{name: [size, mtime_ns] or None when missing}; names are relative to ``root`` when given."""
    listing = {}
    for path in paths:
        path = Path(path)
        name = str(path.relative_to(root)) if root is not None else str(path)
        try:
            stat = path.stat()
            listing[name] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            listing[name] = None
    return listing


@dataclass(frozen=True)
class Fingerprint:
    weights: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        # Through JSON and back: tuples become lists, so a stored and a fresh fingerprint compare equal.
        return json.loads(json.dumps({"format": _FORMAT, "weights": self.weights, "inputs": self.inputs,
                                      "settings": self.settings}))


def _differences(stored, current, where: str) -> list[str]:
    """Dotted names of the entries that differ, descending into dicts (paths are not compared)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(stored) | set(current)):
            if key in ("source", "path"):
                continue
            if key not in stored or key not in current:
                found.append(f"{where}.{key} ({'added' if key not in stored else 'gone'})")
                continue
            found += _differences(stored[key], current[key], f"{where}.{key}")
        return found
    if where.startswith("inputs.") and (stored is None) != (current is None):
        # An image missing before and present now: its questions are retried. One read before and missing
        # now: its rows stay and nothing is recomputed. Either way no row mixes two versions of an input.
        return []
    return [] if stored == current else [where]


def claim(path: str | Path, fingerprint: Fingerprint) -> Path:
    """Store ``fingerprint`` at ``path`` (a first run), or check that it equals the stored one (a resume).

    Raises ``FingerprintMismatch`` naming the differing parts; a stored file that is not a fingerprint is an
    error too (it cannot vouch for the rows).
    """
    path, current = Path(path), fingerprint.to_dict()
    if not path.is_file():
        return atomic_write_json(path, current)
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FingerprintMismatch(f"{path} is not readable JSON ({err}); move the run folder away to start "
                                  "afresh") from None
    if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
        raise FingerprintMismatch(f"{path}: expected a {_FORMAT} file; move the run folder away to start afresh")
    differing = [d for part in ("weights", "inputs", "settings")
                 for d in _differences(stored.get(part), current[part], part)]
    if differing:
        parts = sorted({d.split(".")[0] for d in differing})
        shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
        raise FingerprintMismatch(f"{path.parent} holds rows made with other {' and '.join(parts)} ({shown}); "
                                  "resume with the same ones, or pass another --out")
    return path


def forget_inputs(path: str | Path, part: str, names) -> None:
    """Record inputs of ``part`` (e.g. the images) as missing: a file that could not be read gave no row, so
    a resume may find it repaired or replaced, and is not refused for it."""
    path = Path(path)
    stored = json.loads(path.read_text())
    entries = stored["inputs"].setdefault(part, {})
    entries.update(dict.fromkeys(names))
    atomic_write_json(path, stored)
