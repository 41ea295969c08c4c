"""The joint model J as the two callables ``evaluate`` scores, so J and LLaVA are measured by one code path.

J answers from OWL's embedding through W (docs/design.md §1); comparing it with LLaVA on the same questions is
the paper's "J ≈ LLaVA" check, measured instead of judged.
"""

from __future__ import annotations

import numpy as np
import torch

from owlens.toyworld.world import to_pixel_values

__all__ = ["joint_callables"]


def joint_callables(model):
    """``(next_token_logits, generate)`` over a ``JointModel`` whose processor takes toy-world prompts."""
    def embedding(images: np.ndarray) -> torch.Tensor:
        return model.encode(to_pixel_values(images).to(model.device))  # (B, 1+N, d_owl)

    @torch.no_grad()
    def next_token_logits(images: np.ndarray, prompts: list[str]) -> torch.Tensor:
        # Prompts are left-padded by the processor, so the last column is every prompt's last token.
        return model.logits(embedding(images), list(prompts))[:, -1].float()  # (B, V)

    @torch.no_grad()
    def generate(images: np.ndarray, prompts: list[str], max_new_tokens: int) -> list[str]:
        return model.generate(embedding(images), list(prompts), max_new_tokens=max_new_tokens).texts

    return next_token_logits, generate
