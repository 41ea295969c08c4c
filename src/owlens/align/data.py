"""Images for W's distillation: a folder, a list file, or any sequence of images held in memory.

An image that cannot be read becomes ``None`` and is dropped by ``collate``, which counts it: one bad file
in a million must not end an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from owlens.images import ImageReadError, load_image

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "collate", "list_images"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(source: str | Path) -> list[Path]:
    """Image paths under a folder (recursive, sorted), or listed one per line in a text file."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        paths = [(source.parent / line) if not Path(line).is_absolute() else Path(line)
                 for line in lines if line and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"--images {source}: expected a folder of images or a text file listing them")
    if not paths:
        raise ValueError(f"no images found in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


class ImageFolder(torch.utils.data.Dataset):
    """Each item: (OWL pixels (3, H, W), MLLM pixels (3, h, w)) for one image, or None if it is unreadable."""

    def __init__(self, images: Sequence, processor):
        self.images = images
        self.processor = processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.images[index])
        except ImageReadError:
            return None
        return self.processor.pixel_values(image)[0], self.processor.mllm_pixel_values(image)[0]


def collate(items: list) -> dict[str, torch.Tensor]:
    """Stack the readable items; ``skipped`` counts the others (a 0-d tensor, so it can be summed across ranks)."""
    readable = [item for item in items if item is not None]
    batch = {"skipped": torch.tensor(len(items) - len(readable))}
    if readable:
        batch["owl_pixels"] = torch.stack([owl for owl, _ in readable])
        batch["mllm_pixels"] = torch.stack([mllm for _, mllm in readable])
    return batch
