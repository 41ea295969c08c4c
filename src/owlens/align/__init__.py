"""Training the alignment W by feature distillation, for the toy world and real checkpoints."""

from owlens.align.data import ImageFolder, list_images
from owlens.align.trainer import AlignConfig, AlignResult, train_alignment

__all__ = ["AlignConfig", "AlignResult", "ImageFolder", "list_images", "train_alignment"]
