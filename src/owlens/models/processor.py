"""One image, prepared for both branches of J, on aligned patch grids (docs/design.md §1).

OWL keeps its own processing. LLaVA's is rebuilt without the centre crop (a plain resize to its tower's input
size, as the paper does) so that LLaVA's grid covers the same image regions as OWL's; the two grids must have
the same shape or W's token i would not mean the same region as LLaVA's token i.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from owlens.images import load_image

__all__ = ["GridMismatchError", "JointProcessor", "LLAVA_15_TEMPLATE"]

LLAVA_15_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"


class GridMismatchError(ValueError):
    """The detector's and the MLLM's patch grids cannot be put in correspondence."""


def _grid(vision_config) -> tuple[int, int]:
    rows = vision_config.image_size // vision_config.patch_size
    return rows, rows


def check_grids(owl_config, llava_config) -> tuple[int, int]:
    """The shared grid of a detector/MLLM pair, or a ``GridMismatchError`` saying why there is none."""
    owl_grid, llava_grid = _grid(owl_config.vision_config), _grid(llava_config.vision_config)
    if owl_grid != llava_grid:
        raise GridMismatchError(
            f"the detector sees a {owl_grid[0]}x{owl_grid[1]} patch grid "
            f"({owl_config.vision_config.image_size}px / patch {owl_config.vision_config.patch_size}) but the MLLM "
            f"expects {llava_grid[0]}x{llava_grid[1]} image tokens ({llava_config.vision_config.image_size}px / "
            f"patch {llava_config.vision_config.patch_size}); pick a pair with equal grids (e.g. OWL-ViT B/32 at "
            "768 with LLaVA-1.5 at 336: both 24x24)"
        )
    strategy = getattr(llava_config, "vision_feature_select_strategy", "default")
    if strategy != "default":
        raise GridMismatchError(
            f"the MLLM keeps its CLS token (vision_feature_select_strategy={strategy!r}); J feeds it patch tokens "
            "only, so expected 'default'"
        )
    return owl_grid


class JointProcessor:
    """Pixels for OWL and for LLaVA, OWL text queries, and LLaVA prompts with expanded image placeholders."""

    def __init__(self, owl_image_processor, mllm_image_processor, owl_tokenizer, mllm_tokenizer, *,
                 grid: tuple[int, int], image_token_id: int, prompt_template: str = LLAVA_15_TEMPLATE,
                 query_length: int = 16, vocabulary: tuple[str, ...] | None = None):
        self.owl_image_processor = owl_image_processor
        self.mllm_image_processor = mllm_image_processor
        self.owl_tokenizer = owl_tokenizer
        self.mllm_tokenizer = mllm_tokenizer
        self.grid = grid
        self.image_token_id = image_token_id
        self.prompt_template = prompt_template
        self.query_length = query_length
        # The detector queries a checkpoint was trained on, to name what OWL sees in a box (None: unknown).
        self.vocabulary = None if vocabulary is None else tuple(vocabulary)

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def image_token(self) -> str:
        return self.mllm_tokenizer.convert_ids_to_tokens(self.image_token_id)

    @staticmethod
    def without_centre_crop(image_processor, size: int):
        """A copy of LLaVA's (CLIP) image processor that resizes to size x size and never crops."""
        settings = image_processor.to_dict()
        for key in ("size", "crop_size", "do_center_crop", "image_processor_type", "processor_class"):
            settings.pop(key, None)
        square = {"height": size, "width": size}
        return type(image_processor)(**settings, size=square, crop_size=square, do_center_crop=False)

    def _images(self, images) -> list[Image.Image]:
        if isinstance(images, (str, Image.Image)) or hasattr(images, "__fspath__") or getattr(images, "ndim", 0) == 3:
            images = [images]
        return [load_image(image) for image in images]

    def pixel_values(self, images) -> torch.Tensor:
        """Images → OWL pixel values (B, 3, H_owl, W_owl)."""
        return self.owl_image_processor(images=self._images(images), return_tensors="pt")["pixel_values"]

    def mllm_pixel_values(self, images) -> torch.Tensor:
        """Images → LLaVA's own pixel values (B, 3, h, w), no centre crop (for W's training targets)."""
        return self.mllm_image_processor(images=self._images(images), return_tensors="pt")["pixel_values"]

    def queries(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """OWL text queries → input_ids and attention_mask (Q, L), padded as OWL's own processor pads."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not t.strip() for t in texts):
            raise ValueError(f"expected one or more non-empty text queries; received {list(texts)!r}")
        return dict(self.owl_tokenizer(list(texts), padding="max_length", max_length=self.query_length,
                                       truncation=True, return_tensors="pt"))

    def chat(self, question: str) -> str:
        """Wrap a plain question in the MLLM's prompt template (which holds the image placeholder)."""
        if not question.strip():
            raise ValueError("the question is empty: expected some text to ask about the image")
        return self.prompt_template.format(question=question)

    def prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompts with one image placeholder each → input_ids and attention_mask (B, T), left-padded.

        The single placeholder becomes N = rows·cols image tokens, as LLaVA's processor does. A prompt that
        already starts with the tokenizer's BOS (the toy world's template does) gets no extra special tokens.
        """
        if isinstance(texts, str):
            texts = [texts]
        rows = [self._prompt_ids(text) for text in texts]
        length = max(len(row) for row in rows)
        pad = self.mllm_tokenizer.pad_token_id if self.mllm_tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, row in enumerate(rows):  # left padding: generation continues right after the prompt
            input_ids[index, length - len(row):] = torch.tensor(row)
            attention_mask[index, length - len(row):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _prompt_ids(self, text: str) -> list[int]:
        if not text.strip():
            raise ValueError("the prompt is empty: expected text with an image placeholder, e.g. "
                             f"{self.prompt_template!r}")
        bos = self.mllm_tokenizer.bos_token
        add_special = not (bos and text.lstrip().startswith(bos))
        ids = self.mllm_tokenizer(text, add_special_tokens=add_special)["input_ids"]
        count = ids.count(self.image_token_id)
        if count == 0:
            raise ValueError(f"the prompt has no image placeholder {self.image_token!r}: expected one, e.g. "
                             f"{self.prompt_template!r}; received {text!r}")
        if count == self.num_image_tokens:
            return ids
        if count != 1:
            raise ValueError(f"the prompt has {count} image placeholders; expected 1 (or {self.num_image_tokens} "
                             "already expanded)")
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1:]
