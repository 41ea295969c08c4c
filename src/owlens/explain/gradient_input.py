"""Gradient×input baseline: Σ_c v_ic · ∂ logit / ∂v_ic on every image token v_i = W(E[:, 1:])_i, positive part.

Shrikumar et al., "Not Just a Black Box" (arXiv 1605.01713, 2016): the first-order contribution of each token to
the logit relative to a zero token. Summed over the LM's channels, then the **positive part** by default: the
tokens that push the explained logit up, which is what the other maps (and the pointing and localisation
metrics) read as "where the token comes from"; ``absolute=True`` keeps the magnitude of both signs instead.
"""

from __future__ import annotations

import torch

from owlens.explain._base import Explainer, grid_saliency
from owlens.explain._lm_pass import lm_pass

__all__ = ["GradientInput"]


class GradientInput(Explainer):
    """``GradientInput(model, absolute=False).explain((image, prompt), target="circle")``."""

    method = "gradient_input"

    def __init__(self, model, *, absolute: bool = False, **options):
        super().__init__(model, **options)
        self.absolute = absolute

    def _explain(self, inputs, plans):
        result = lm_pass(self.model, inputs.embedding, plans, gradients="image_tokens")
        dtype = torch.promote_types(result.image_grads.dtype, torch.float32)
        contribution = (result.image_grads.to(dtype) * result.image_tokens.to(dtype)[:, None]).sum(-1)  # (B, L, N)
        relevance = contribution.abs() if self.absolute else contribution.clamp(min=0)
        return [[grid_saliency(relevance[b, t], self.model, plan, t, float(result.logits[b, t]),
                               inputs.image_sizes[b], self.method) for t in range(len(plan.positions))]
                for b, plan in enumerate(plans)]
