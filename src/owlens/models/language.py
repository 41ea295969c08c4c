"""The language branch of J: image tokens W(E[:, 1:]) placed at the prompt's image positions, then the LM.

The LM is the real ``LlavaForConditionalGeneration``; it receives ``inputs_embeds`` built exactly the way its
own forward builds them from ``pixel_values`` (embed the prompt, scatter the image features over the
placeholder tokens), so feeding LLaVA's own projected features here reproduces LLaVA's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from owlens.models.last_position import last_position_logits

__all__ = ["Generation", "LanguageBranch", "position_ids"]


@dataclass(frozen=True)
class Generation:
    """What ``generate`` produced for each image of the batch.

    texts: decoded answers, special tokens removed.
    token_ids: the new token ids per answer (prompt excluded, stops at and excludes end-of-sequence).
    first_logits: (B, V) the LM's raw logits at the answer's first position (the prompt's last), when asked
        for with ``first_logits=True``: the same forward a separate ``logits`` call would repeat.
    """

    texts: list[str]
    token_ids: list[list[int]]
    first_logits: torch.Tensor | None = None


class LanguageBranch:
    """Holds the LLaVA model; its vision tower is unused here (J sees the image through OWL)."""

    def __init__(self, llava: nn.Module):
        self.llava = llava
        self.image_token_id = int(llava.config.image_token_id)

    @property
    def width(self) -> int:
        """D_lm, the width of the LM's input embeddings."""
        return self.llava.get_input_embeddings().weight.shape[1]

    def own_image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """LLaVA's own path: its pixels (B, 3, h, w) → tower → projector → image tokens (B, N, D_lm).

        These are W's distillation targets (docs/design.md §2) and the reference the language branch is tested on.
        """
        config = self.llava.config
        features = self.llava.model.get_image_features(
            pixel_values=pixel_values.to(self.llava.dtype), vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy).pooler_output
        return torch.stack(list(features))

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) with N image placeholders per row, features (B, N, D) → inputs_embeds (B, T, D)."""
        placeholders = input_ids == self.image_token_id  # (B, T)
        counts = placeholders.sum(dim=1)
        batch, tokens = image_features.shape[:2]
        if input_ids.shape[0] != batch:
            raise ValueError(f"{input_ids.shape[0]} prompts for {batch} images: expected one prompt per image")
        if not bool((counts == tokens).all()):
            raise ValueError(f"each prompt must hold exactly {tokens} image placeholder tokens "
                             f"(id {self.image_token_id}), one per image feature; received {counts.tolist()}")
        embeds = self.llava.get_input_embeddings()(input_ids)
        features = image_features.to(embeds.dtype)
        return embeds.masked_scatter(placeholders.unsqueeze(-1), features)

    def logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) → logits (B, T, V), pre-softmax."""
        return self.llava(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          position_ids=position_ids(attention_mask)).logits

    def last_logits(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) → logits (B, V) of each row's last position, the next token: ``logits(...)[:, -1]`` for
        about four fifths of the work (``last_position``: the last decoder layer runs there alone)."""
        return last_position_logits(self.llava, inputs_embeds, attention_mask, position_ids(attention_mask))

    def generate(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        tokenizer,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
        first_logits: bool = False,
    ) -> Generation:
        """Greedy (default) or sampled decoding from prepared embeddings.

        Sampling draws from a private RNG stream seeded by ``seed``: the caller's global RNG state is returned
        untouched, and the same seed gives the same text.
        """
        devices = [inputs_embeds.device] if inputs_embeds.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
            output = self.llava.generate(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                output_logits=first_logits,
                return_dict_in_generate=True,
                **sampling,
            )
        token_ids = [_until_eos(row.tolist(), tokenizer.eos_token_id) for row in output.sequences]
        texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        return Generation(texts=texts, token_ids=token_ids, first_logits=output.logits[0] if first_logits else None)


def position_ids(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) mask → (B, T) positions counted from each row's first real token, as ``generate`` counts them.

    Without this a left-padded prompt would be scored at shifted positions and disagree with generation.
    """
    if attention_mask is None:
        return None
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _until_eos(ids: list[int], eos_token_id: int | None) -> list[int]:
    return ids[: ids.index(eos_token_id)] if eos_token_id is not None and eos_token_id in ids else ids
