"""What every run folder relies on: atomic writes, paths confined to their folder, pickle-free state.

``atomic``  write a file so that a reader (or a rerun after a kill) sees the old content or the new, never half
``paths``   resolve a path a run folder or a question file names, refusing anything outside its root
``lock``    one writer per run folder: a second run is refused naming the holder; a killed run's lock is free
``fingerprint``  the weights, inputs and settings that produced a folder's rows; a resume must match them
``state``   save and load nested training state (tensors, numbers, strings) as one safetensors file: no pickle,
            so opening a run folder never runs code from it
"""

from owlens.persist.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from owlens.persist.paths import OutsideFolderError, confined
from owlens.persist.state import StateFormatError, load_state, save_state

__all__ = [
    "OutsideFolderError",
    "StateFormatError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "confined",
    "load_state",
    "save_state",
]
