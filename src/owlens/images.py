"""Reading images the way users hand them to us: paths, PIL images or arrays, in any mode.

Every failure names the file and the reason, so a batch run can report it and move on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageReadError", "load_image", "to_rgb"]


class ImageReadError(ValueError):
    """An image could not be read or decoded."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Alpha is composited on white (what a viewer shows), high-bit-depth grey is rescaled to its own range
    rather than clipped (PIL's plain ``convert`` would saturate 16-bit images to white).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def load_image(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """Return ``source`` as an RGB PIL image.

    Accepts a path, a PIL image, or a uint8 array shaped (H, W) or (H, W, 3|4).
    Raises ``ImageReadError`` for a missing, unreadable or corrupt file, or an array of the wrong shape.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[-1] not in (3, 4)):
            raise ImageReadError(f"expected an array shaped (H, W), (H, W, 3) or (H, W, 4); received {source.shape}")
        if source.dtype != np.uint8:
            raise ImageReadError(f"expected a uint8 image array; received dtype {source.dtype}")
        return to_rgb(Image.fromarray(source))
    path = Path(source)
    if path.is_dir():
        raise ImageReadError(f"expected an image file; received the folder {path}")
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later inside a model call
            return to_rgb(opened)
    # A decompression bomb (a small file that decodes to gigapixels) is refused by PIL with an error that is
    # no OSError: it is as unreadable as a corrupt file.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
