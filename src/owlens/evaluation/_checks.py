"""Shared input checks for the metrics: one map, one truth region, and the errors that say what was wrong."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_map", "as_region", "box_mask", "dilate"]


def as_map(saliency_map, name: str = "saliency map") -> np.ndarray:
    """A map (H, W) as numpy, torch or nested lists → float64 (H, W); NaN or inf are refused."""
    if isinstance(saliency_map, torch.Tensor):
        saliency_map = saliency_map.detach().cpu().double().numpy()
    values = np.asarray(saliency_map, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a {name} shaped (H, W); received shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"the {name} holds NaN or infinite values; expected finite numbers")
    return values


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """Box corners x0, y0, x1, y1 in pixels (x1, y1 exclusive) → bool (H, W) of the pixels it overlaps.

    Pixel (r, c) covers [c, c+1) x [r, r+1), the convention of ``explain.maps.paint_boxes``; the box is clipped.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"expected a box x0, y0, x1, y1 with x1 > x0 and y1 > y0; received {(x0, y0, x1, y1)}")
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    cols = max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)))
    rows = max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)))
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def as_region(truth, shape: tuple[int, int]) -> np.ndarray:
    """Truth as a bool mask (H, W) matching the map, one box (4,) or several boxes (K, 4) → bool (H, W).

    Refused: a mask of another shape (expected vs received), and a region with no pixel inside the image.
    """
    if isinstance(truth, torch.Tensor):
        truth = truth.detach().cpu().numpy()
    truth = np.asarray(truth)
    if truth.ndim == 1 and truth.shape == (4,):
        region = box_mask(truth, shape)
    elif truth.ndim == 2 and truth.dtype != bool and truth.shape[-1] == 4 and truth.shape != tuple(shape):
        region = np.any([box_mask(box, shape) for box in truth], axis=0)
    elif truth.ndim == 2:
        if truth.shape != tuple(shape):
            raise ValueError(f"the truth mask is {truth.shape[0]}x{truth.shape[1]} (H x W) but the map is "
                             f"{shape[0]}x{shape[1]}; expected a mask at the map's resolution")
        region = truth.astype(bool)
    else:
        raise ValueError(f"expected the truth as a mask (H, W), a box (4,) or boxes (K, 4); received shape "
                         f"{truth.shape}")
    if not region.any():
        raise ValueError("the truth region is empty (no pixel of the image lies in it); expected at least one pixel")
    return region


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of the mask (pixel centres), bool (H, W)."""
    if radius < 0:
        raise ValueError(f"expected a tolerance of 0 pixels or more; received {radius}")
    reach = int(np.floor(radius))
    grown = mask.copy()
    height, width = mask.shape
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                shifted = np.zeros_like(mask)
                shifted[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)] = \
                    mask[max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)]
                grown |= shifted
    return grown
