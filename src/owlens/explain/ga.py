"""Gradient Alignment (GA): the paper's saliency for any output token (docs/design.md §3, arXiv 2405.14612).

    g = ∂ logit_n[s] / ∂E                 (raw pre-softmax logit, through W and the LM; teacher forcing)
    h_m = ∂ (z_m(c), box_m) / ∂E          (every box m of OWL for the query c = "a photo of a " + s)
    φ_m = cos(h_m, g)                     (over the whole (1+N)×d tensor E, class and each coordinate apart)
    map = max over boxes of minmax(φ^cls) painted over each box

Both branches read the same E, so a box whose gradient points where the token's gradient points is a region
through which the detector and the MLLM see the same thing. The per-box cosines come from ``_owl_grads``
(one JVP and closed-form norms) instead of the paper's N·5 backward passes; the tests hold both equal.
"""

from __future__ import annotations

import torch

from owlens.explain._base import Explainer
from owlens.explain._lm_pass import logit_gradients
from owlens.explain._owl_grads import box_cosines, compiled_box_cosines
from owlens.explain.inputs import ExplainInputs
from owlens.explain.maps import boxes_to_pixels, minmax, paint_boxes
from owlens.explain.saliency import Saliency
from owlens.explain.targets import TokenPlan
from owlens.queries import QUERY_TEMPLATE

__all__ = ["GradientAlignment"]


class GradientAlignment(Explainer):
    """``GradientAlignment(model).explain((image, prompt), target="bird") -> Saliency``.

    model: a ``JointModel`` with its processor. query_template: the detector query for a token (paper default).
    chunk: cotangents per block in the closed-form norms (memory vs speed only, not results; None: automatic).
    compile: run the OWL side through ``torch.compile`` (same results; about 2x faster on small models such as
    the toy world, where kernel launches dominate; the first call compiles for tens of seconds).
    """

    method = "ga"

    def __init__(self, model, *, query_template: str = QUERY_TEMPLATE, chunk: int | None = None,
                 compile: bool = False):
        super().__init__(model, query_template=query_template)
        self.chunk = chunk
        self._box_cosines = compiled_box_cosines if compile else box_cosines

    def _explain(self, inputs: ExplainInputs, plans: list[TokenPlan]) -> list[list[Saliency]]:
        grads, logits = logit_gradients(self.model, inputs.embedding, plans)  # (B, L, 1+N, d), (B, L)
        return [self._image(inputs, b, plan, grads[b], logits[b]) for b, plan in enumerate(plans)]

    def _image(self, inputs: ExplainInputs, b: int, plan: TokenPlan, grads: torch.Tensor,
               logits: torch.Tensor) -> list[Saliency]:
        count = len(plan.positions)
        if count == 0:
            return []
        queries = list(dict.fromkeys(plan.queries))
        with torch.no_grad():
            query_embeds = self.model.query_embeds(queries)
            index = torch.tensor([queries.index(q) for q in plan.queries])
            result = self._box_cosines(self.model.detection, inputs.embedding[b], query_embeds, grads[:count], index,
                                 chunk=self.chunk)
        return [_saliency(result.cosines[t], result.boxes_cxcywh, plan, t, float(logits[t]), inputs.image_sizes[b],
                          self.method) for t in range(count)]


def _saliency(cosines: torch.Tensor, boxes: torch.Tensor, plan: TokenPlan, t: int, logit: float,
              image_size: tuple[int, int], method: str) -> Saliency:
    """cosines (N, 5) of one token, image of ``image_size`` (width, height) → ``Saliency``: min-max per column
    over boxes, boxes painted by class weight."""
    cosines, boxes = cosines.detach().cpu(), boxes.detach().cpu()
    weights = minmax(cosines)
    painted = paint_boxes(boxes_to_pixels(boxes, image_size), weights[:, 0], image_size)
    return Saliency(map=painted, token=plan.tokens[t], token_id=plan.token_ids[t], position=plan.positions[t],
                    logit=logit, query=plan.queries[t], method=method, image_size=image_size, boxes_cxcywh=boxes,
                    class_weights=weights[:, 0], coord_weights=weights[:, 1:], class_cosines=cosines[:, 0],
                    coord_cosines=cosines[:, 1:])
