"""From OWL's dense per-patch predictions to the few boxes a person wants to see."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from owlens.models.detection import Detections

__all__ = ["Box", "select_boxes"]


@dataclass(frozen=True)
class Box:
    """One detected box. ``box_xyxy_px`` are pixel corners in the original image; ``index`` is its patch."""

    query: str
    score: float
    box_xyxy_px: tuple[float, float, float, float]
    index: int

    def to_dict(self) -> dict:
        return asdict(self)


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    low = torch.maximum(box[:2], others[:, :2])
    high = torch.minimum(box[2:], others[:, 2:])
    inter = (high - low).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(dim=1)
    return inter / (area + areas - inter).clamp(min=1e-9)


def select_boxes(detections: Detections, queries: list[str], width: int, height: int, *, image: int = 0,
                 threshold: float = 0.1, nms_iou: float = 0.3, max_per_query: int = 10) -> list[Box]:
    """Boxes of one image whose score passes ``threshold``, non-maximum suppressed per query, best first."""
    scores = detections.scores[image]  # (N, Q)
    boxes = detections.boxes_xyxy_px(width, height)[image]  # (N, 4)
    selected: list[Box] = []
    for q, query in enumerate(queries):
        order = torch.argsort(scores[:, q], descending=True)
        kept: list[int] = []
        for index in order.tolist():
            if scores[index, q] < threshold or len(kept) == max_per_query:
                break
            if kept and bool((_iou(boxes[index], boxes[kept]) > nms_iou).any()):
                continue
            kept.append(index)
        selected += [Box(query, float(scores[i, q]), tuple(float(v) for v in boxes[i]), i) for i in kept]
    return sorted(selected, key=lambda box: -box.score)
