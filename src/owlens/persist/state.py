"""Nested training state in one safetensors file, without pickle.

A checkpoint is a tree of dicts, lists and tuples whose leaves are tensors, numbers, strings, booleans or None
(model and optimizer ``state_dict``s, scheduler state, step counters, RNG states). ``save_state`` stores the
tensors as safetensors entries and the rest of the tree as JSON in the file's header metadata, so one file,
written atomically, holds it all. Loading parses JSON and raw tensor bytes only: a crafted file cannot run
code, which ``torch.load`` of a pickle can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from owlens.persist.atomic import atomic_write_bytes

__all__ = ["StateFormatError", "load_state", "save_state"]

_META_KEY, _FORMAT = "owlens-state", "owlens-state/1"


class StateFormatError(ValueError):
    """A state file that is not one ``save_state`` wrote, is truncated, or holds an unsupported value."""


def _encode(value, tensors: dict[str, torch.Tensor], where: str):
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        # Optimizer states key parameters by int: keep the keys' types exactly.
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
    raise StateFormatError(f"{where}: expected tensors, numbers, strings, lists, tuples or dicts; "
                           f"received {type(value).__name__}")


def _decode(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        if value["__tensor__"] not in tensors:
            raise StateFormatError(f"the state names tensor {value['__tensor__']!r}, which the file does not hold")
        return tensors[value["__tensor__"]]
    if set(value) == {"__tuple__"}:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if set(value) == {"__items__"}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_state(path: str | Path, state) -> Path:
    """Write ``state`` (a tree, see the module docstring) to ``path`` atomically and durably."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    data = safetensors_bytes(tensors, metadata={_META_KEY: json.dumps({"format": _FORMAT, "tree": tree})})
    return atomic_write_bytes(path, data, durable=True)


def load_state(path: str | Path):
    """The tree ``save_state`` wrote to ``path``; ``StateFormatError`` for any other or damaged file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = json.loads((handle.metadata() or {}).get(_META_KEY, "null"))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StateFormatError(f"{path} is not a readable owlens state file ({err}); delete it to start over") from err
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise StateFormatError(f"{path}: expected an {_FORMAT} state file; received header "
                               f"{'without owlens state' if meta is None else repr(meta)[:80]}")
    return _decode(meta["tree"], tensors)
