"""One pass of the LM over planned (image, token) pairs, for every method that reads the LM.

The planned sequences are left-padded into one batch, the LM head runs only on the explained positions, and
each explained token's logit is picked at the position that predicts it. On top of that one forward, a method
asks for what it reads: ∂ logit / ∂E (GA and the object attribution, ``gradients="embedding"``), ∂ logit / ∂v
for the image tokens the LM reads, v = W(E[:, 1:]) (the gradient baselines, ``gradients="image_tokens"``), or
the LM's attention probabilities (the attention baselines). The L backward passes run batched
(``is_grads_batched``), each serving all images at once since image b's logits depend on E[b] only.

Several explainers read the same pass: GA and the object attribution ∂ logit / ∂E, the two gradient baselines
∂ logit / ∂v, the two attention baselines the probabilities. Inside ``shared_lm_passes()`` a repeated request
(the same E tensor, equal plans, the same reads) is answered from the first one's result, so an evaluation that
runs every method on one case pays for three passes instead of six; the results are the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from owlens.explain.targets import TokenPlan
from owlens.models.language import position_ids

__all__ = ["GRADIENTS", "LMPass", "eager_attention", "lm_pass", "logit_gradients", "pad_plans", "padded_plans",
           "shared_lm_passes"]

GRADIENTS = ("embedding", "image_tokens")
# key → (E, LMPass) while a ``shared_lm_passes`` block is open; E is kept so that its id cannot be reused.
_SHARED: ContextVar[dict | None] = ContextVar("owlens_shared_lm_passes", default=None)


@contextmanager
def shared_lm_passes() -> Iterator[None]:
    """Inside, ``lm_pass`` runs once per distinct request; the results are dropped on exit. For callers that
    explain one image with several methods and do not change E in between (the saliency evaluation)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _request_key(model, embedding: torch.Tensor, plans: list[TokenPlan], gradients, attentions: bool) -> tuple:
    implementation = model.language.llava.config.text_config._attn_implementation  # eager and SDPA differ in bits
    return (id(model), id(embedding), embedding._version, gradients, attentions, implementation,
            tuple((tuple(p.input_ids), tuple(p.positions), tuple(p.token_ids)) for p in plans))


def pad_plans(plans: list[TokenPlan], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Left-pad the planned sequences: ids, mask (B, T); positions, token ids (B, L); valid (B, L)."""
    length = max(len(plan.input_ids) for plan in plans)
    tokens = max(len(plan.positions) for plan in plans)
    ids = torch.full((len(plans), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    positions = torch.zeros((len(plans), tokens), dtype=torch.long)
    token_ids, valid = torch.zeros_like(positions), torch.zeros_like(positions, dtype=torch.bool)
    for b, plan in enumerate(plans):
        pad = length - len(plan.input_ids)
        ids[b, pad:], mask[b, pad:] = torch.tensor(plan.input_ids), 1
        count = len(plan.positions)
        positions[b, :count] = torch.tensor(plan.positions) + pad
        token_ids[b, :count], valid[b, :count] = torch.tensor(plan.token_ids), True
    return tuple(t.to(device) for t in (ids, mask, positions, token_ids, valid))


def padded_plans(model, plans: list[TokenPlan], device) -> tuple[torch.Tensor, ...]:
    """``pad_plans`` with the LM tokenizer's pad id (0 when it has none: masked out either way)."""
    tokenizer = model.processor.mllm_tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_plans(plans, pad_id, device)


@dataclass(frozen=True)
class LMPass:
    """What one pass over B planned sequences (left-padded to T) gave. L = most tokens explained in one image.

    logits: (B, L) raw logit of each explained token at the position that predicts it; 0 past a plan's end.
    image_tokens: (B, N, D) v = W(E[:, 1:]), the LM's image tokens.
    image_grads: (B, L, N, D) ∂ logit / ∂v per explained token (``gradients="image_tokens"``), else None.
    embedding_grads: (B, L, 1+N, d) ∂ logit / ∂E per explained token (``gradients="embedding"``), else None.
    attentions: per LM layer (B, H, T, T) attention probabilities (query row first), or None.
    image_positions: (B, N) index of each image token in the padded sequence, in the grid's row-major order.
    positions: (B, L) the predicting position of each explained token in the padded sequence.
    pad: (B,) left padding of each row (a plan's own index i sits at i + pad).
    """

    logits: torch.Tensor
    image_tokens: torch.Tensor
    image_grads: torch.Tensor | None
    embedding_grads: torch.Tensor | None
    attentions: tuple[torch.Tensor, ...] | None
    image_positions: torch.Tensor
    positions: torch.Tensor
    pad: torch.Tensor


def lm_pass(model, embedding: torch.Tensor, plans: list[TokenPlan], *, gradients: str | None = None,
            attentions: bool = False) -> LMPass:
    """E (B, 1+N, d) and one plan per image → ``LMPass``; attentions need ``eager_attention`` around the call.

    ``gradients``: None, "embedding" (∂/∂E) or "image_tokens" (∂/∂v); gradients are computed even inside an
    outer ``torch.no_grad()``.
    """
    if gradients not in (None, *GRADIENTS):
        raise ValueError(f"expected gradients=None or one of {GRADIENTS}; received {gradients!r}")
    shared = _SHARED.get()
    if shared is None:
        return _lm_pass(model, embedding, plans, gradients, attentions)
    key = _request_key(model, embedding, plans, gradients, attentions)
    if key not in shared:
        shared[key] = (embedding, _lm_pass(model, embedding, plans, gradients, attentions))
    return shared[key][1]


def _lm_pass(model, embedding: torch.Tensor, plans: list[TokenPlan], gradients: str | None,
             attentions: bool) -> LMPass:
    ids, mask, positions, token_ids, valid = padded_plans(model, plans, embedding.device)
    keep = torch.unique(positions)  # the LM head runs only where a logit is explained
    with torch.set_grad_enabled(gradients is not None):
        if gradients == "embedding":
            leaf = embedding.detach().requires_grad_(True)
            tokens = model.image_tokens(leaf)  # (B, N, D)
        else:
            tokens = model.image_tokens(embedding.detach()).detach().requires_grad_(gradients is not None)
            leaf = tokens
        embeds = model.language.embed(ids, tokens)
        # logits_to_keep: the LM head runs only on the explained positions (LanguageBranch.logits runs it on all).
        output = model.language.llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask),
                                      logits_to_keep=keep, use_cache=False, output_attentions=attentions)
        rows = torch.arange(len(plans), device=ids.device)[:, None]
        picked = output.logits[rows, torch.searchsorted(keep, positions), token_ids]  # (B, L)
        grads = _grads(picked, leaf, valid) if gradients is not None else None
    if attentions and not output.attentions:
        raise RuntimeError("the LM returned no attentions: run inside eager_attention(model)")
    image_positions = (ids == model.language.image_token_id).nonzero()[:, 1].view(len(plans), -1)
    pad = (mask == 0).sum(-1)
    return LMPass(picked.detach() * valid, tokens.detach(), grads if gradients == "image_tokens" else None,
                  grads if gradients == "embedding" else None,
                  tuple(a.detach() for a in output.attentions) if attentions else None, image_positions, positions,
                  pad)


def logit_gradients(model, embedding: torch.Tensor, plans: list[TokenPlan]) -> tuple[torch.Tensor, torch.Tensor]:
    """g = ∂ logit / ∂E (B, L, 1+N, d) and the raw logits (B, L) of ``lm_pass``; zeros past a plan's end."""
    result = lm_pass(model, embedding, plans, gradients="embedding")
    return result.embedding_grads, result.logits


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
