"""Detection-only baseline: OWL's own map for the token's query, with no MLLM involved.

Each of OWL's boxes is painted with its sigmoid score for the query (GA's query: "a photo of a {token}" unless
overridden), pixelwise max. It shows what the detector sees, whatever the MLLM did; a method that explains the
MLLM has to do better than this on the MLLM's own logit (deletion/insertion) and on the cue test, where the
object the query names is not there (docs/benchmarks.md, "Gradient Alignment").
"""

from __future__ import annotations

import torch

from owlens.explain._base import Explainer
from owlens.explain._lm_pass import lm_pass
from owlens.explain.maps import boxes_to_pixels, paint_boxes
from owlens.explain.saliency import Saliency

__all__ = ["DetectionOnly"]


class DetectionOnly(Explainer):
    """``DetectionOnly(model).explain((image, prompt), target="circle")``: boxes painted with their scores.

    ``class_weights`` holds the raw sigmoid scores (not min-maxed: they are probabilities already). The logit
    is the LM's, as for every method, so that results line up; the map does not depend on it.
    """

    method = "detection_only"

    def _explain(self, inputs, plans):
        logits = lm_pass(self.model, inputs.embedding, plans).logits  # (B, L)
        out = []
        for b, plan in enumerate(plans):
            queries = list(dict.fromkeys(plan.queries))
            with torch.no_grad():
                detections = self.model.detect(inputs.embedding[b:b + 1], queries)
            scores = detections.scores[0].cpu()  # (N, Q) float32
            boxes = detections.boxes_cxcywh[0].detach().cpu()  # (N, 4)
            size = inputs.image_sizes[b]
            corners = boxes_to_pixels(boxes, size)
            row = []
            for t in range(len(plan.positions)):
                weights = scores[:, queries.index(plan.queries[t])]
                row.append(Saliency(map=paint_boxes(corners, weights, size), token=plan.tokens[t],
                                    token_id=plan.token_ids[t], position=plan.positions[t],
                                    logit=float(logits[b, t]), query=plan.queries[t], method=self.method,
                                    image_size=size, boxes_cxcywh=boxes, class_weights=weights))
            out.append(row)
        return out
