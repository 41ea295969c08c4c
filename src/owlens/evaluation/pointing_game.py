"""Pointing game: does the map's maximum fall on the object? Higher is better.

Category: localisation. Reference: Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016
(IJCV 2018): a hit when the maximum point lies in the ground-truth region with a 15-pixel tolerance.

Tolerance: the truth region (mask or boxes) is grown by ``tolerance_px`` pixels (Euclidean, pixel centres)
before the test; 0 is the strict test. Zhang et al.'s 15 px are about 6.7% of their ~224-pixel images, which is
4 px on the toy world's 64-pixel scenes.

Ties: maps painted from boxes or patches have flat tops, so "the" maximum is usually a plateau of pixels, and
taking the first in raster order would favour the top-left. The score of one map is the fraction of its maximal
pixels that hit: the expected outcome of the original game under a uniformly random choice among equal maxima.
It is 1 or 0 when the maximum is one pixel; a constant map scores the share of the image the region covers.
"""

from __future__ import annotations

import numpy as np

from owlens.evaluation._checks import as_map, as_region, dilate

__all__ = ["PointingGame", "maximal_pixels"]


def maximal_pixels(values: np.ndarray) -> np.ndarray:
    """Bool (H, W): the pixels where the map attains its maximum (exact equality: the plateau)."""
    return values == values.max()


class PointingGame:
    """``PointingGame(tolerance_px=4)(saliency_map, truth) -> float`` in [0, 1] for one map.

    saliency_map: (H, W) numbers (numpy or torch). truth: bool mask (H, W), one box x0, y0, x1, y1 (pixels, x1
    and y1 exclusive), or boxes (K, 4) whose union is the object. The dataset score is the mean over maps.
    """

    name = "pointing_game"
    higher_is_better = True
    category = "localisation"
    reference = "Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016"

    def __init__(self, tolerance_px: float = 0.0):
        if tolerance_px < 0:
            raise ValueError(f"expected a tolerance of 0 pixels or more; received {tolerance_px}")
        self.tolerance_px = tolerance_px

    def __call__(self, saliency_map, truth) -> float:
        values = as_map(saliency_map)
        region = dilate(as_region(truth, values.shape), self.tolerance_px)
        top = maximal_pixels(values)
        return float((top & region).sum() / top.sum())
