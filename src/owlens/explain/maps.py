"""From per-box weights to a saliency map, as the paper paints it (docs/design.md §3)."""

from __future__ import annotations

import math

import torch

from owlens.boxes import cxcywh_to_xyxy

__all__ = ["minmax", "paint_boxes", "boxes_to_pixels"]


def minmax(values: torch.Tensor) -> torch.Tensor:
    """Min-max normalise (N, ...) over the N boxes (dim 0), each column on its own, into [0, 1].

    A column whose values are all equal carries no ranking: it becomes all zeros.
    """
    low, high = values.amin(0, keepdim=True), values.amax(0, keepdim=True)
    spread = high - low
    return torch.where(spread > 0, (values - low) / torch.where(spread > 0, spread, 1), 0.0)


def boxes_to_pixels(boxes_cxcywh: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) cx, cy, w, h normalised to [0, 1] → (N, 4) x0, y0, x1, y1 in pixels of ``image_size`` (width, height)."""
    # float64: the corners decide which pixels a box paints, and float32 would move edges that sit on a pixel border
    return cxcywh_to_xyxy(boxes_cxcywh.double(), image_size)


def paint_boxes(boxes_xyxy_px: torch.Tensor, weights: torch.Tensor, image_size: tuple[int, int], *,
                combine: str = "max") -> torch.Tensor:
    """Boxes (N, 4) pixel corners x0, y0, x1, y1 and weights (N,) → map (H, W) float32 for an image of
    ``image_size`` (width, height).

    Each box, clipped to the image, paints every pixel it overlaps with its weight; the map is the pixelwise max
    over boxes (``combine="sum"``: their sum), and 0 where no box lies (pixel (r, c) covers [c, c+1) x [r, r+1)).
    """
    if combine not in ("max", "sum"):
        raise ValueError(f"combine must be 'max' or 'sum'; received {combine!r}")
    width, height = image_size
    canvas = torch.zeros(height, width, dtype=torch.float32)
    for (x0, y0, x1, y1), weight in zip(boxes_xyxy_px.tolist(), weights.tolist()):
        cols = _span(x0, x1, width)
        rows = _span(y0, y1, height)
        if cols and rows:
            region = canvas[rows[0]:rows[1], cols[0]:cols[1]]
            if combine == "max":
                region.clamp_(min=weight)  # in place: the pixelwise max
            else:
                region += weight
    return canvas


def _span(low: float, high: float, size: int) -> tuple[int, int] | None:
    """Pixel indices [start, stop) that the interval [low, high] overlaps with positive length, within [0, size)."""
    start, stop = max(0, math.floor(low)), min(size, math.ceil(high))
    return (start, stop) if stop > start and high > low else None
