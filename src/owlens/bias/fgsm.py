"""FGSM on E, the paper's perturbation (docs/design.md §5): one signed-gradient step, E' = E − ε·sign(∇_E loss).

Paper default: ε = 1 in the L∞ norm, with the swap loss of ``perturbation.py``. ε is in E's own units, so
its effect depends on the scale of the detector's hidden states: measure the swap rate it buys
(``Perturbation.swapped``) before trusting the MLLM's change of answer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from owlens.bias.perturbation import PAPER_TARGET, SwapPerturbation

__all__ = ["FGSM", "PAPER_EPSILON"]

PAPER_EPSILON = 1.0


class FGSM(SwapPerturbation):
    """``FGSM(model, epsilon=1.0).perturb(E, "man", "woman") -> Perturbation``."""

    method = "fgsm"

    def __init__(self, model, epsilon: float = PAPER_EPSILON, *, target: float = PAPER_TARGET, **kwargs):
        super().__init__(model, target=target, **kwargs)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive; received {epsilon}")
        self.epsilon = float(epsilon)

    @property
    def settings(self) -> dict:
        return {"epsilon": self.epsilon, "norm": "linf", "steps": 1, **super().settings}

    def _delta(self, embedding: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return -self.epsilon * gradient(embedding).sign()  # (B, 1+N, d), descent on the swap loss
