"""Boxes drawn on an image: one colour per label, line width from a weight (the paper draws GA that way)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

__all__ = ["draw_boxes", "PALETTE"]

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60))


def draw_boxes(image: Image.Image, boxes_xyxy_px: Sequence[Sequence[float]], labels: Sequence[str],
               widths: Sequence[float] | None = None, scale: int = 1) -> Image.Image:
    """A copy of ``image`` (upscaled by ``scale`` so small images stay legible) with labelled boxes."""
    canvas = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(dict.fromkeys(labels))}
    for k, (box, label) in enumerate(zip(boxes_xyxy_px, labels)):
        width = max(1, round(widths[k])) if widths is not None else 2
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colours[label], width=width)
        draw.text((x0 + 2, y0 + 1), label, fill=colours[label])
    return canvas
