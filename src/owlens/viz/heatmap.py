"""A saliency map drawn over its image as a heat map (no plotting library needed)."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["colorize", "overlay"]

# Anchor colours of a perceptually ordered dark-to-bright map (close to matplotlib's "inferno").
_ANCHORS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                     [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values (H, W) in [0, 1] → uint8 RGB (H, W, 3); values outside [0, 1] are clipped."""
    scaled = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(np.floor(scaled).astype(int), len(_ANCHORS) - 2)
    frac = (scaled - low)[..., None]
    return np.round(_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


def overlay(image: Image.Image, saliency_map: np.ndarray, *, alpha: float = 0.5, scale: int = 1) -> Image.Image:
    """The image (upscaled by ``scale``) blended with the coloured map; the map must match the image's size."""
    height, width = np.shape(saliency_map)
    if (width, height) != image.size:
        raise ValueError(f"the map is {width}x{height} but the image is {image.width}x{image.height}; expected "
                         "a map at the image's resolution")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; received {alpha}")
    heat = Image.fromarray(colorize(saliency_map))
    blended = Image.blend(image.convert("RGB"), heat, alpha)
    return blended.resize((width * scale, height * scale), Image.NEAREST)
