"""The one result type every explainer returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from owlens.explain.maps import boxes_to_pixels

__all__ = ["ObjectEvidence", "Saliency"]


@dataclass(frozen=True)
class ObjectEvidence:
    """One object an explanation rests on: an OWL box, what OWL reads there, and what the MLLM loses without it.

    index: the box's patch (OWL predicts one box per patch token, row-major). box_cxcywh: (4,) centre x, centre
    y, width, height normalised to [0, 1]; box_xyxy_px: (4,) pixel corners of the image. concept: the best
    matching query of the vocabulary, concept_score its sigmoid score. weight: the box's weight in the map,
    in [0, 1]. tokens: how many image tokens the box covers. logit_without: the explained raw logit without the
    box, as the explainer's weighting takes it away (by default: the box filled with the image's median in the
    detector's input and E encoded again; "occlusion": its tokens of E replaced by the image's mean patch
    token); logit_drop = logit − that. logit_without_first: for an object after the first one listed, the logit
    with the first one's box and this one's both blanked (the second round of the "pixels" weighting), None
    otherwise: an object the first stands in for drops the logit little alone, and this says what it carries once
    the first is gone.
    """

    index: int
    box_cxcywh: tuple[float, float, float, float]
    box_xyxy_px: tuple[float, float, float, float]
    concept: str
    concept_score: float
    weight: float
    tokens: int
    logit_without: float
    logit_drop: float
    logit_without_first: float | None = None

    def to_dict(self) -> dict:
        return {"index": self.index, "box_cxcywh": list(self.box_cxcywh), "box_xyxy_px": list(self.box_xyxy_px),
                "concept": self.concept, "concept_score": self.concept_score, "weight": self.weight,
                "tokens": self.tokens, "logit_without": self.logit_without, "logit_drop": self.logit_drop,
                "logit_without_first": self.logit_without_first}


@dataclass(frozen=True)
class Saliency:
    """One explanation: why the MLLM gave one token for one image.

    map: (H, W) float32 in [0, 1] at the image's resolution (``image_size`` = (width, height)); 0 where nothing points.
    token, token_id: the explained token (for GA, the last sub-token of the string the user named).
    position: index, in the prompt plus any teacher-forced text (padding excluded), of the position whose
        logit predicts the token; the token itself sits at position + 1.
    logit: that raw pre-softmax logit.
    query: the detector query the boxes were scored with (GA: "a photo of a {token}" unless overridden).
    method: the explainer's name ("ga").
    Per-box fields, N boxes (one per patch, as OWL-ViT predicts them), None for methods without boxes:
    boxes_cxcywh: (N, 4) centre x, centre y, width, height, normalised to [0, 1] of the image.
    class_weights: (N,) the class weights φ^cls after min-max over the boxes; the map paints these.
    coord_weights: (N, 4) the cx, cy, w, h weights, each column min-maxed on its own.
    class_cosines, coord_cosines: (N,) and (N, 4), the same before min-max: raw cosines in [-1, 1].
    objects: for object-level methods, the objects the explanation rests on, heaviest first (``ObjectEvidence``).
    Per-box tensors are on the CPU in the dtype they were computed in (the model's); the map is float32.
    """

    map: torch.Tensor
    token: str
    token_id: int
    position: int
    logit: float
    query: str
    method: str
    image_size: tuple[int, int]
    boxes_cxcywh: torch.Tensor | None = None
    class_weights: torch.Tensor | None = None
    coord_weights: torch.Tensor | None = None
    class_cosines: torch.Tensor | None = None
    coord_cosines: torch.Tensor | None = None
    objects: tuple[ObjectEvidence, ...] | None = None

    def map_array(self) -> np.ndarray:
        """The map as a float32 numpy array (H, W)."""
        return self.map.detach().cpu().numpy().astype(np.float32)

    def boxes_xyxy_px(self) -> torch.Tensor | None:
        """(N, 4) box corners x0, y0, x1, y1 in pixels of ``image_size``, not clipped (float64)."""
        return None if self.boxes_cxcywh is None else boxes_to_pixels(self.boxes_cxcywh, self.image_size)

    def to_dict(self, *, include_map: bool = False) -> dict:
        """JSON-safe: tensors become nested lists of floats; the map only when asked (it is H·W numbers)."""
        payload = {"method": self.method, "token": self.token, "token_id": self.token_id,
                   "position": self.position, "logit": self.logit, "query": self.query,
                   "image_size": list(self.image_size), "map_shape": list(self.map.shape)}
        for name in ("boxes_cxcywh", "class_weights", "coord_weights", "class_cosines", "coord_cosines"):
            value = getattr(self, name)
            payload[name] = None if value is None else value.detach().cpu().double().tolist()
        payload["objects"] = None if self.objects is None else [o.to_dict() for o in self.objects]
        if include_map:
            payload["map"] = self.map_array().tolist()
        return payload
