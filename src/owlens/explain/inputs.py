"""What an explainer reads: J's shared embedding E for B images and one prompt per image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from owlens.images import load_image

__all__ = ["ExplainInputs", "as_inputs"]


@dataclass(frozen=True)
class ExplainInputs:
    """B images seen through E, with their prompts.

    embedding: (B, 1+N, d_owl) E, OWL's penultimate hidden state (CLS first).
    input_ids: (B, T) prompt ids holding N image placeholders each, left-padded.
    attention_mask: (B, T) 1 on real tokens, 0 on padding.
    image_sizes: ((width, height), ...) per image: the resolution the saliency maps are painted at.
    pixel_values: (B, 3, H, W) the detector's input that E was encoded from, or None when only E is known
        (the methods that change the image and encode it again need it: ``object_attribution``'s default).
    """

    embedding: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_sizes: tuple[tuple[int, int], ...]
    pixel_values: torch.Tensor | None = None

    def __post_init__(self):
        batch = self.embedding.shape[0]
        if self.embedding.ndim != 3:
            raise ValueError(f"expected E shaped (B, 1+N, d); received {tuple(self.embedding.shape)}")
        if self.input_ids.shape[0] != batch or len(self.image_sizes) != batch:
            raise ValueError(f"expected one prompt and one image size per image ({batch}); received "
                             f"{self.input_ids.shape[0]} prompts and {len(self.image_sizes)} sizes")
        if self.pixel_values is not None and (self.pixel_values.ndim != 4 or self.pixel_values.shape[0] != batch):
            raise ValueError(f"expected pixel values shaped (B={batch}, 3, H, W); received "
                             f"{tuple(self.pixel_values.shape)}")

    @property
    def batch(self) -> int:
        return self.embedding.shape[0]

    @classmethod
    def from_images(cls, model, images, prompt: str | Sequence[str]) -> ExplainInputs:
        """Paths, PIL images or uint8 arrays (one or a list) and a prompt (one for all, or one per image)."""
        many = isinstance(images, (list, tuple))
        loaded = [load_image(image) for image in (images if many else [images])]
        pixel_values = model.pixel_values(loaded)
        with torch.no_grad():
            embedding = model.encode(pixel_values)
        return cls.from_embedding(model, embedding, prompt, image_sizes=[image.size for image in loaded],
                                  pixel_values=pixel_values)

    @classmethod
    def from_embedding(cls, model, embedding: torch.Tensor, prompt, *,
                       image_sizes: Sequence[tuple[int, int]] | None = None,
                       pixel_values: torch.Tensor | None = None) -> ExplainInputs:
        """E (B, 1+N, d) and prompts: text (one for all, or one per image) or a dict of input_ids/attention_mask.

        Without ``image_sizes`` the maps are painted at the detector's input resolution. ``pixel_values``: the
        detector's input E was encoded from (``model.pixel_values(images)``), for the methods that
        encode a changed image again.
        """
        batch = embedding.shape[0]
        ids = prompt if isinstance(prompt, dict) else _prompt_ids(model, prompt, batch)
        mask = ids.get("attention_mask")
        mask = torch.ones_like(ids["input_ids"]) if mask is None else mask
        if image_sizes is None:
            side = model.owl.config.vision_config.image_size
            image_sizes = [(side, side)] * batch
        pixel_values = None if pixel_values is None else pixel_values.detach().to(model.device)
        return cls(embedding.detach(), ids["input_ids"].to(model.device), mask.to(model.device),
                   tuple((int(w), int(h)) for w, h in image_sizes), pixel_values)


def _prompt_ids(model, prompt: str | Sequence[str], batch: int) -> dict[str, torch.Tensor]:
    """A prompt with the image placeholder is used as is; a plain question is wrapped in the chat template."""
    processor = model.processor
    if processor is None:
        raise ValueError("this JointModel has no processor: pass the prompt as a dict of input_ids and "
                         "attention_mask, or load the model with JointModel.from_pretrained")
    texts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    if len(texts) != batch:
        raise ValueError(f"expected one prompt or {batch} (one per image); received {len(texts)}")
    texts = [text if processor.image_token in text else processor.chat(text) for text in texts]
    return processor.prompts(texts)


def as_inputs(model, inputs) -> ExplainInputs:
    """``ExplainInputs``, or a pair (images, prompt) to build them from."""
    if isinstance(inputs, ExplainInputs):
        return inputs
    if isinstance(inputs, tuple) and len(inputs) == 2:
        return ExplainInputs.from_images(model, *inputs)
    raise TypeError(f"expected ExplainInputs or a pair (images, prompt); received {type(inputs).__name__}")
