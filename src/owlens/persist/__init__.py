"""What every run folder relies on: atomic writes, paths confined to their folder, pickle-free state.

``atomic``  write a file so that a reader (or a rerun after a kill) sees the old content or the new, never half
``jsonl``   read the complete rows of a JSON Lines file whose writer may have been killed mid-row
``paths``   resolve a path a run folder or a question file names, refusing anything outside its root
``lock``    one writer per run folder: a second run is refused naming the holder; a killed run's lock is free
``fingerprint``  the weights, inputs and settings that produced a folder's rows; a resume must match them
``state``   save and load nested training state (tensors, numbers, strings) as one safetensors file: no pickle,
            so opening a run folder never runs code from it
"""

from owlens.persist.atomic import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text
from owlens.persist.jsonl import read_jsonl
from owlens.persist.paths import OutsideFolderError, confined

_STATE = ("StateFormatError", "load_state", "save_state")


def __getattr__(name: str):
    # ``state`` imports torch (about a second): loaded on first use, so that `owlens --help` and the run-folder
    # commands that never touch training state start without it.
    if name in _STATE:
        from owlens.persist import state

        return getattr(state, name)
    raise AttributeError(f"module 'owlens.persist' has no attribute {name!r}")

__all__ = [
    "OutsideFolderError",
    "StateFormatError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "confined",
    "load_state",
    "read_jsonl",
    "save_state",
]
