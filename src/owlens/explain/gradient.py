"""Gradient baseline: ‖∂ logit / ∂v_i‖ for every image token v_i = W(E[:, 1:])_i the LM reads.

The plain sensitivity map (Simonyan et al., "Deep Inside Convolutional Networks", ICLR-W 2014) taken where the
MLLM meets the image: at its image tokens, one per patch, each painted over its patch. The gradient is the one
GA starts from (the same raw logit, the same position), read before it is compared with any detector box.
"""

from __future__ import annotations

import torch

from owlens.explain._base import Explainer, grid_saliency
from owlens.explain._lm_pass import lm_pass

__all__ = ["Gradient"]


class Gradient(Explainer):
    """``Gradient(model).explain((image, prompt), target="circle")``: L2 norm over channels of ∂logit/∂v, per token."""

    method = "gradient"

    def _explain(self, inputs, plans):
        result = lm_pass(self.model, inputs.embedding, plans, gradients="image_tokens")
        grads = result.image_grads  # (B, L, N, D)
        relevance = grads.to(torch.promote_types(grads.dtype, torch.float32)).norm(dim=-1)  # (B, L, N)
        return [[grid_saliency(relevance[b, t], self.model, plan, t, float(result.logits[b, t]),
                               inputs.image_sizes[b], self.method) for t in range(len(plan.positions))]
                for b, plan in enumerate(plans)]
