"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020), with residual.

Each layer's attention, heads averaged, is mixed with the identity for the residual connection and renormalised,
Â_l = (0.5·A_l + 0.5·I) (rows sum to one); the rollout Â_L ··· Â_1 says how much of each input position flows
into each output. The map is the row of the predicting position, read on the image tokens. Padding is cut away
first, so a batched row rolls out exactly as that sequence alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from owlens.explain._base import Explainer, grid_saliency
from owlens.explain._lm_pass import eager_attention, lm_pass

__all__ = ["AttentionRollout", "rollout"]


def rollout(attentions: Sequence[torch.Tensor], rows: torch.Tensor, *, residual: float = 0.5) -> torch.Tensor:
    """Per layer (H, T, T) probabilities, first layer first, and query rows (L,) → rollout rows (L, T).

    Computed from the top as row vectors, e_p Â_L Â_{L-1} ··· Â_1: O(layers·T²) per row, no T×T products.
    """
    length = attentions[0].shape[-1]
    flow = torch.zeros(len(rows), length, dtype=attentions[0].dtype, device=attentions[0].device)
    flow[torch.arange(len(rows)), rows] = 1.0
    identity = torch.eye(length, dtype=flow.dtype, device=flow.device)
    for layer in reversed(attentions):
        mixed = (1 - residual) * layer.mean(0) + residual * identity
        flow = flow @ (mixed / mixed.sum(-1, keepdim=True))
    return flow


class AttentionRollout(Explainer):
    """``AttentionRollout(model).explain((image, prompt), target="circle")``: every LM layer, residual 0.5."""

    method = "rollout"

    def _borrowed(self):
        return eager_attention(self.model)

    def _explain(self, inputs, plans):
        result = lm_pass(self.model, inputs.embedding, plans, attentions=True)
        out = []
        for b, plan in enumerate(plans):
            pad = int(result.pad[b])
            layers = [a[b, :, pad:, pad:].double() for a in result.attentions]  # (H, T_b, T_b) each
            flow = rollout(layers, torch.tensor(plan.positions, device=layers[0].device))  # (L, T_b)
            relevance = flow[:, result.image_positions[b] - pad]  # (L, N)
            out.append([grid_saliency(relevance[t], self.model, plan, t, float(result.logits[b, t]),
                                      inputs.image_sizes[b], self.method) for t in range(len(plan.positions))])
        return out
