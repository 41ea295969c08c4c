"""Box geometry, written once: OWL's centre boxes (cx, cy, w, h) to corners (x0, y0, x1, y1), and IoU of corners.

Both functions take a torch tensor or a numpy array and give back the same kind, dtype and device. Numpy arrays
stay numpy so that code without torch (rendering a report from a run folder) can use them too. The corners
follow transformers' ``center_to_corners_format`` (cx ± 0.5·w, the formula HF's OWL-ViT post-processing uses),
then scale, so pixel boxes here equal HF's bit for bit; it is not called directly because it only handles the
unscaled conversion and loads transformers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou", "cxcywh_to_xyxy"]


def _namespace(array):
    """numpy for an ndarray, else torch (which is loaded already: the caller holds a tensor)."""
    if isinstance(array, np.ndarray):
        return np
    import torch  # here, not at the top: reached only with a tensor in hand, so numpy callers never load torch

    return torch


def cxcywh_to_xyxy(boxes, image_size: tuple[int, int] | None = None):
    """(..., 4) cx, cy, w, h → (..., 4) x0, y0, x1, y1.

    With ``image_size`` = (width, height) the boxes are taken as normalised to [0, 1] and the corners are in
    pixels (x scaled by the width, y by the height, after the conversion). Keeps the dtype: cast first for the
    precision wanted.
    """
    xp = _namespace(boxes)
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    corners = xp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    if image_size is None:
        return corners
    width, height = image_size
    scale = [width, height, width, height]
    return corners * (np.asarray(scale, dtype=corners.dtype) if xp is np else corners.new_tensor(scale))


def box_iou(boxes, others):
    """Corners (A, 4) and (B, 4), x0, y0, x1, y1 → IoU (A, B).

    A box with x1 < x0 or y1 < y0 has area 0; two boxes whose union is empty have IoU 0 (not 0/0).
    """
    xp = _namespace(boxes)
    low = xp.maximum(boxes[:, None, :2], others[None, :, :2])
    high = xp.minimum(boxes[:, None, 2:], others[None, :, 2:])
    span = (high - low).clip(min=0)
    inter = span[..., 0] * span[..., 1]
    union = _area(boxes)[:, None] + _area(others)[None, :] - inter
    return inter / union.clip(min=1e-9)


def _area(boxes):
    sides = (boxes[:, 2:] - boxes[:, :2]).clip(min=0)
    return sides[:, 0] * sides[:, 1]
