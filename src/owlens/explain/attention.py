"""Attention baseline: the last LM layer's attention from the predicting position to each image token.

The raw-attention map that attention-based explanations of VLMs start from: heads averaged, read on the row of
the position whose logit predicts the token (teacher forcing as GA), one value per image token painted over its
patch. Attention says where the last layer reads from, not what changes the logit (Jain & Wallace, "Attention is
not Explanation", NAACL 2019): it is here as the baseline a reviewer asks for.
"""

from __future__ import annotations

from owlens.explain._base import Explainer, grid_saliency
from owlens.explain._lm_pass import eager_attention, lm_pass

__all__ = ["Attention"]


class Attention(Explainer):
    """``Attention(model).explain((image, prompt), target="circle")``: last layer, heads averaged."""

    method = "attention"

    def _borrowed(self):
        return eager_attention(self.model)

    def _explain(self, inputs, plans):
        result = lm_pass(self.model, inputs.embedding, plans, attentions=True)
        last = result.attentions[-1].double().mean(1)  # (B, T, T), heads averaged
        out = []
        for b, plan in enumerate(plans):
            rows = last[b, result.positions[b, :len(plan.positions)]]  # (L, T)
            relevance = rows[:, result.image_positions[b]]  # (L, N)
            out.append([grid_saliency(relevance[t], self.model, plan, t, float(result.logits[b, t]),
                                      inputs.image_sizes[b], self.method) for t in range(len(plan.positions))])
        return out
