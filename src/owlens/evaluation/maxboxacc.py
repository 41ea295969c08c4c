"""MaxBoxAcc and MaxBoxAccV2: the WSOL box-accuracy protocol the paper used on CUB. Higher is better.

Category: localisation (weakly supervised object localisation). Reference: Choe et al., "Evaluating Weakly
Supervised Object Localization Methods Right", CVPR 2020 (code: clovaai/wsolevaluation).

For every image the map is min-max normalised and quantised as the reference does (``uint8(map·255)``); for
each threshold τ in {0, 0.01, …, 0.99} the pixels above ``int(τ·max)`` form a mask whose connected components
(8-connected) are boxed. BoxAcc(τ, δ) is the share of images whose box has IoU ≥ δ with a truth box.
- MaxBoxAcc: the largest component's box, δ = 0.5, maximised over τ.
- MaxBoxAccV2: the best box over all components, maximised over τ for each δ ∈ {0.3, 0.5, 0.7}, then averaged.
Differences from the reference code, none of which moves a box by more than a pixel row: boxes are pixel-
exclusive with exact areas (the reference clips x1 to W-1 and adds 1 to widths); the largest component is
the largest by pixel count (the reference uses the contour polygon's area); hole contours, which the
reference's RETR_TREE also boxes, are not separate components. A constant map has no box at any τ (IoU 0).

Both metrics are dataset-level: ``curve`` gives one image's IoU at every τ, ``from_curves`` the score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from owlens.evaluation._checks import as_map
from owlens.evaluation._components import component_ious

__all__ = ["MaxBoxAcc", "MaxBoxAccV2", "box_iou_curves", "wsol_levels"]

CAM_CURVE_INTERVAL = 0.01  # the reference's default: 100 thresholds


def wsol_levels(saliency_map) -> np.ndarray:
    """Map (H, W) → uint8 levels as the reference normalises them (min-max; a constant map → all 0)."""
    values = as_map(saliency_map)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) / (high - low) * 255).astype(np.uint8)


def _truth_boxes(boxes) -> np.ndarray:
    truth = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(truth) == 0 or not ((truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])).all():
        raise ValueError(f"expected one or more truth boxes x0, y0, x1, y1 with x1 > x0 and y1 > y0; received "
                         f"{truth.tolist()}")
    return truth


def box_iou_curves(saliency_map, boxes, thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One map and its truth boxes (4,) or (G, 4) in pixels → IoU per threshold: (largest component, best component)."""
    thresholds = np.arange(0, 1, CAM_CURVE_INTERVAL) if thresholds is None else np.asarray(thresholds)
    levels = wsol_levels(saliency_map)
    cutoffs = (thresholds * int(levels.max())).astype(int)
    return component_ious(levels.astype(np.int64), cutoffs, _truth_boxes(boxes))


class MaxBoxAcc:
    """``MaxBoxAcc()(maps, boxes) -> float`` in [0, 1]: largest component, IoU ≥ ``iou_threshold`` (0.5)."""

    name = "maxboxacc"
    higher_is_better = True
    category = "localisation (WSOL)"
    reference = "Choe et al., Evaluating Weakly Supervised Object Localization Methods Right, CVPR 2020"
    iou_thresholds: tuple[float, ...] = (0.5,)
    all_components = False

    def __init__(self, iou_thresholds: Sequence[float] | None = None, cam_curve_interval: float = CAM_CURVE_INTERVAL):
        if iou_thresholds is not None:
            self.iou_thresholds = tuple(iou_thresholds)
        self.thresholds = np.arange(0, 1, cam_curve_interval)

    def curve(self, saliency_map, boxes) -> np.ndarray:
        """One image's IoU at every threshold τ (T,)."""
        largest, best = box_iou_curves(saliency_map, boxes, self.thresholds)
        return best if self.all_components else largest

    def from_curves(self, curves) -> float:
        """Curves (M, T) of M images → the score: max over τ of BoxAcc, averaged over the IoU thresholds δ."""
        curves = np.asarray(curves, dtype=np.float64)
        if curves.ndim != 2 or len(curves) == 0:
            raise ValueError(f"expected IoU curves shaped (images, thresholds) for one image or more; received "
                             f"shape {curves.shape}")
        return float(np.mean([(curves >= delta).mean(0).max() for delta in self.iou_thresholds]))

    def __call__(self, maps, boxes) -> float:
        if len(maps) != len(boxes):
            raise ValueError(f"expected one set of truth boxes per map; received {len(maps)} maps and {len(boxes)}")
        return self.from_curves([self.curve(m, b) for m, b in zip(maps, boxes)])


class MaxBoxAccV2(MaxBoxAcc):
    """``MaxBoxAccV2()(maps, boxes) -> float``: every component's box, δ ∈ {0.3, 0.5, 0.7} averaged."""

    name = "maxboxacc_v2"
    iou_thresholds = (0.3, 0.5, 0.7)
    all_components = True
