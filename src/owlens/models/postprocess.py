"""From OWL's dense per-patch predictions to the few boxes a person wants to see."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from owlens.boxes import box_iou
from owlens.models.detection import Detections
from owlens.results import FieldsResult

__all__ = ["Box", "nms", "select_boxes"]


@dataclass(frozen=True)
class Box(FieldsResult):
    """One detected box, as ``owlens detect`` reports it and as a hallucination verdict holds its best box.

    query: the detector query it answers. score: sigmoid of its logit for that query.
    box_xyxy_px: corners x0, y0, x1, y1 in pixels of the original image. index: the patch that predicts it.
    """

    query: str
    score: float
    box_xyxy_px: tuple[float, float, float, float]
    index: int


def nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, *, iou: float, max_keep: int,
        threshold: float = float("-inf")) -> list[int]:
    """Greedy non-maximum suppression: indices of boxes (N, 4) kept, best score (N,) first.

    A box is dropped when its score is below ``threshold`` or its IoU with a kept box exceeds ``iou``.
    """
    kept: list[int] = []
    for index in torch.argsort(scores, descending=True).tolist():
        if scores[index] < threshold or len(kept) == max_keep:
            break
        if kept and bool((box_iou(boxes_xyxy[index, None], boxes_xyxy[kept]) > iou).any()):
            continue
        kept.append(index)
    return kept


def select_boxes(detections: Detections, queries: list[str], image_size: tuple[int, int], *, image: int = 0,
                 threshold: float = 0.1, nms_iou: float = 0.3, max_per_query: int = 10) -> list[Box]:
    """Boxes of one image of ``image_size`` (width, height) whose score passes ``threshold``, non-maximum
    suppressed per query, best first."""
    scores = detections.scores[image]  # (N, Q)
    boxes = detections.boxes_xyxy_px(image_size)[image]  # (N, 4)
    selected: list[Box] = []
    for q, query in enumerate(queries):
        kept = nms(boxes, scores[:, q], iou=nms_iou, max_keep=max_per_query, threshold=threshold)
        selected += [Box(query, float(scores[i, q]), tuple(float(v) for v in boxes[i]), i) for i in kept]
    return sorted(selected, key=lambda box: -box.score)
