"""Projected gradient descent on E: the extension of the paper's single FGSM step (docs/design.md §5).

Several smaller steps inside a budget (L∞ box or L2 ball around E, per image) follow the swap loss's curved
path through OWL's last layer, where one step of size ε follows only its slope at E. With ``steps=1``,
``step_size=epsilon`` and the L∞ norm it is exactly ``FGSM`` (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from owlens.bias.perturbation import PAPER_TARGET, SwapPerturbation

__all__ = ["NORMS", "PGD"]

NORMS = ("linf", "l2")


def _per_image_norm(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) → (B, 1, ..., 1) L2 norm over everything but the batch, kept broadcastable."""
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))


class PGD(SwapPerturbation):
    """``PGD(model, epsilon, steps=10, norm="linf").perturb(E, c_minus, c_plus) -> Perturbation``.

    epsilon: the budget, max |δ| (L∞) or ‖δ‖₂ (L2) per image, in E's units.
    step_size: per step; default 2.5·ε/steps (Madry et al.'s rule, so the budget's edge is reachable).
    """

    method = "pgd"

    def __init__(self, model, epsilon: float, steps: int = 10, *, step_size: float | None = None,
                 norm: str = "linf", target: float = PAPER_TARGET, **kwargs):
        super().__init__(model, target=target, **kwargs)
        if not epsilon > 0 or steps < 1:
            raise ValueError(f"expected epsilon > 0 and steps >= 1; received epsilon={epsilon}, steps={steps}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be positive; received {step_size}")
        self.epsilon, self.steps, self.norm = float(epsilon), int(steps), norm
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.epsilon / self.steps

    @property
    def settings(self) -> dict:
        return {"epsilon": self.epsilon, "norm": self.norm, "steps": self.steps, "step_size": self.step_size,
                **super().settings}

    def _delta(self, embedding: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        delta = torch.zeros_like(embedding, dtype=torch.float32)  # (B, 1+N, d), kept in float32
        for _ in range(self.steps):
            grad = gradient(embedding + delta.to(embedding.dtype)).float()
            if self.norm == "linf":
                delta = (delta - self.step_size * grad.sign()).clamp(-self.epsilon, self.epsilon)
            else:
                delta = delta - self.step_size * grad / _per_image_norm(grad)
                delta = delta * (self.epsilon / _per_image_norm(delta)).clamp(max=1.0)
        return delta
