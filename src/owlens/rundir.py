"""A run folder: what a run computed, as files a report (or a person, or a script) can read back.

    RUN_DIR/run.json                      schema "owlens-run/1": model, settings, timings, items, pope, bias
    RUN_DIR/images/ITEM.png               each item's image
    RUN_DIR/maps/ITEM/METHOD/NNN.npy      the saliency map (H, W) float32 in [0, 1] of answer token NNN
    RUN_DIR/maps/ITEM/METHOD/NNN.json     that explanation's ``Saliency.to_dict()`` (per-box weights, query)

Paths inside run.json are relative to RUN_DIR, so a run folder can be moved or archived whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["SCHEMA", "RunFormatError", "map_path", "save_image", "save_saliency", "write_run", "read_run"]

SCHEMA = "owlens-run/1"


class RunFormatError(ValueError):
    """A run folder is missing run.json, has another schema, or points at files that are not there."""


def map_path(item_id: str, method: str, token_index: int) -> str:
    """The relative base path (no suffix) of one explanation's files."""
    return f"maps/{item_id}/{method}/{token_index:03d}"


def save_image(folder: Path, item_id: str, image) -> str:
    relative = f"images/{item_id}.png"
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    image.save(folder / relative)
    return relative


def save_saliency(folder: Path, item_id: str, token_index: int, saliency) -> str:
    """Write the map (.npy) and its explanation (.json); returns the relative base path."""
    base = map_path(item_id, saliency.method, token_index)
    (folder / base).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{base}.npy", saliency.map_array())
    (folder / f"{base}.json").write_text(json.dumps(saliency.to_dict()))
    return base


def write_run(folder: Path, payload: dict) -> Path:
    """Write run.json last and atomically: a folder whose run.json exists is complete."""
    path = Path(folder) / "run.json"
    partial = path.with_name("run.json.partial")
    partial.write_text(json.dumps({"schema": SCHEMA, **payload}, indent=2) + "\n")
    partial.replace(path)
    return path


def read_run(folder: str | Path) -> dict:
    """Load run.json and check that every file it names is there."""
    folder = Path(folder)
    path = folder / "run.json"
    if not path.is_file():
        raise RunFormatError(f"{folder} is not a run folder: expected {path} (written by `owlens demo` and the "
                             "other run commands)")
    run = json.loads(path.read_text())
    if run.get("schema") != SCHEMA:
        raise RunFormatError(f"{path}: expected schema {SCHEMA!r}, received {run.get('schema')!r}")
    missing = [name for item in run.get("items", []) for name in _files(item) if not (folder / name).is_file()]
    if missing:
        raise RunFormatError(f"{folder}: run.json names {len(missing)} missing file(s), e.g. {missing[:3]}")
    return run


def _files(item: dict) -> list[str]:
    names = [item["image"]]
    for per_token in item.get("saliency", {}).values():
        names += [f"{base}{suffix}" for base in per_token.values() for suffix in (".npy", ".json")]
    return names
