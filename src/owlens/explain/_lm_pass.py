"""One pass of the LM over planned (image, token) pairs, for the baselines that read the LM directly.

GA differentiates with respect to E (``_lm_grads``); the gradient baselines differentiate with respect to the
image tokens the LM reads, v = W(E[:, 1:]), and the attention baselines read the LM's attention probabilities.
Both share this forward: the planned sequences left-padded into one batch, as ``_lm_grads`` pads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from owlens.explain._lm_grads import pad_plans
from owlens.explain.targets import TokenPlan

__all__ = ["LMPass", "eager_attention", "lm_pass"]


@dataclass(frozen=True)
class LMPass:
    """What one pass over B planned sequences (left-padded to T) gave. L = most tokens explained in one image.

    logits: (B, L) raw logit of each explained token at the position that predicts it; 0 past a plan's end.
    image_tokens: (B, N, D) v = W(E[:, 1:]), the LM's image tokens.
    image_grads: (B, L, N, D) ∂ logit / ∂v per explained token, or None when not asked for.
    attentions: per LM layer (B, H, T, T) attention probabilities (query row first), or None.
    image_positions: (B, N) index of each image token in the padded sequence, in the grid's row-major order.
    positions: (B, L) the predicting position of each explained token in the padded sequence.
    pad: (B,) left padding of each row (a plan's own index i sits at i + pad).
    """

    logits: torch.Tensor
    image_tokens: torch.Tensor
    image_grads: torch.Tensor | None
    attentions: tuple[torch.Tensor, ...] | None
    image_positions: torch.Tensor
    positions: torch.Tensor
    pad: torch.Tensor


def lm_pass(model, embedding: torch.Tensor, plans: list[TokenPlan], *, gradients: bool = False,
            attentions: bool = False) -> LMPass:
    """E (B, 1+N, d) and one plan per image → ``LMPass``; attentions need ``eager_attention`` around the call."""
    tokenizer = model.processor.mllm_tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask, positions, token_ids, valid = pad_plans(plans, pad_id, embedding.device)
    keep = torch.unique(positions)  # the LM head runs only where a logit is explained
    with torch.set_grad_enabled(gradients):
        tokens = model.image_tokens(embedding.detach()).detach().requires_grad_(gradients)  # (B, N, D)
        embeds = model.language.embed(ids, tokens)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # count real tokens only, as ``_lm_grads`` does
        output = model.language.llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                      logits_to_keep=keep, use_cache=False, output_attentions=attentions)
        rows = torch.arange(len(plans), device=ids.device)[:, None]
        picked = output.logits[rows, torch.searchsorted(keep, positions), token_ids]  # (B, L)
        grads = _grads(picked, tokens, valid) if gradients else None
    if attentions and not output.attentions:
        raise RuntimeError("the LM returned no attentions: run inside eager_attention(model)")
    image_positions = (ids == model.language.image_token_id).nonzero()[:, 1].view(len(plans), -1)
    pad = (mask == 0).sum(-1)
    return LMPass(picked.detach() * valid, tokens.detach(), grads,
                  tuple(a.detach() for a in output.attentions) if attentions else None, image_positions, positions,
                  pad)


def _grads(picked: torch.Tensor, leaf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """∂ picked[b, l] / ∂ leaf[b] for every explained token, (B, L, N, D); one batched backward for all l."""
    count = picked.shape[1]
    if count == 1:
        return torch.autograd.grad(picked, leaf, grad_outputs=valid.to(picked.dtype))[0][:, None]
    basis = torch.eye(count, dtype=picked.dtype, device=leaf.device)[:, None, :] * valid  # (L, B, L)
    return torch.autograd.grad(picked, leaf, grad_outputs=basis, is_grads_batched=True)[0].transpose(0, 1)


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """The LM's attention implementation set to "eager" inside (SDPA returns no probabilities), then restored."""
    llava = model.language.llava
    config = llava.config.text_config
    previous = config._attn_implementation
    try:
        if previous != "eager":
            llava.set_attn_implementation({"text_config": "eager"})
        yield
    finally:
        if config._attn_implementation != previous:
            llava.set_attn_implementation({"text_config": previous})
