"""Random baseline: a value drawn uniformly in [0, 1) for each image token, painted over its patch.

The floor every metric is read against. Seeded: a new ``RandomMap(model, seed=s)`` called on the same sequence
of inputs gives the same maps, whatever else uses torch's global generator in between.
"""

from __future__ import annotations

import torch

from owlens.explain._base import Explainer, grid_saliency
from owlens.explain._lm_pass import lm_pass

__all__ = ["RandomMap"]


class RandomMap(Explainer):
    """``RandomMap(model, seed=0).explain((image, prompt), target="circle")``: one uniform value per grid cell."""

    method = "random"

    def __init__(self, model, *, seed: int = 0, **options):
        super().__init__(model, **options)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # private: the global RNG is never touched

    def _explain(self, inputs, plans):
        logits = lm_pass(self.model, inputs.embedding, plans).logits  # (B, L)
        cells = self.model.grid[0] * self.model.grid[1]
        return [[grid_saliency(torch.rand(cells, generator=self.generator, dtype=torch.float64), self.model, plan,
                               t, float(logits[b, t]), inputs.image_sizes[b], self.method)
                 for t in range(len(plan.positions))] for b, plan in enumerate(plans)]
