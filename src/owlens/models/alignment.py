"""The alignment W: OWL patch tokens → the LM's input space (docs/design.md §2).

Saved as ``model.safetensors`` plus ``alignment_config.json`` in a folder, so that it loads without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from owlens.persist.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["AlignmentConfig", "Alignment", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "alignment_config.json"
WEIGHTS_NAME = "model.safetensors"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class AlignmentConfig:
    in_dim: int  # d_owl, the width of E
    out_dim: int  # D_lm, the width of the LM's input embeddings
    hidden_dims: tuple[int, ...] = (8192, 8192, 8192)  # paper default: 768→8192→8192→8192→4096
    activation: str = "relu"  # paper default; "gelu" for the LLaVA-projector-shaped light variant

    def __post_init__(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}: expected one of {sorted(_ACTIVATIONS)}")
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in self.hidden_dims))

    @classmethod
    def paper(cls, in_dim: int, out_dim: int) -> AlignmentConfig:
        """The paper's MLP: three hidden layers of 8192 with ReLU."""
        return cls(in_dim, out_dim, (8192, 8192, 8192), "relu")

    @classmethod
    def light(cls, in_dim: int, out_dim: int) -> AlignmentConfig:
        """Shaped like LLaVA-1.5's own projector: in→out→out with GELU."""
        return cls(in_dim, out_dim, (out_dim,), "gelu")


class Alignment(nn.Module):
    """Per-token MLP W: (B, N, in_dim) → (B, N, out_dim)."""

    def __init__(self, config: AlignmentConfig):
        super().__init__()
        self.config = config
        widths = (config.in_dim, *config.hidden_dims, config.out_dim)
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            if index:
                layers.append(_ACTIVATIONS[config.activation]())
            layers.append(nn.Linear(width_in, width_out))
        self.mlp = nn.Sequential(*layers)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(patch_tokens)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config and weights; the folder is complete only once both files are in place."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS_NAME, save(state))  # a crash never leaves half a weights file
        atomic_write_json(folder / CONFIG_NAME, asdict(self.config))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Alignment:
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"alignment W not found in {folder}: missing {', '.join(missing)}. Train one with "
                "`owlens align train` or pass the folder that `Alignment.save_pretrained` wrote."
            )
        config = AlignmentConfig(**json.loads(config_path.read_text()))
        module = cls(config)
        state = load_file(str(weights_path))
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        received = {k: tuple(v.shape) for k, v in state.items()}
        if expected != received:
            raise ValueError(f"{weights_path} does not match {config_path}: expected tensors {expected}, "
                             f"received {received}")
        module.load_state_dict(state)
        # Keep the stored dtype (a bf16 W stays bf16).
        return module.to(next(iter(state.values())).dtype)
