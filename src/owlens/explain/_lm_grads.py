"""g = ∂ logit_n[s] / ∂E through W and the LM, for many (image, token) pairs from one forward (docs/design.md §3)."""

from __future__ import annotations

import torch

from owlens.explain.targets import TokenPlan
from owlens.models.language import position_ids

__all__ = ["logit_gradients", "pad_plans"]


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


def logit_gradients(model, embedding: torch.Tensor, plans: list[TokenPlan]) -> tuple[torch.Tensor, torch.Tensor]:
    """E (B, 1+N, d) and one plan per image → g (B, L, 1+N, d) and the raw logits (B, L); zeros past a plan's end.

    One forward of every sequence; the L backward passes run batched (``is_grads_batched``), each serving all
    images at once since image b's logits depend on E[b] only.
    """
    tokenizer = model.processor.mllm_tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask, positions, token_ids, valid = pad_plans(plans, pad_id, embedding.device)
    keep = torch.unique(positions)  # the LM head runs only where a logit is explained
    with torch.enable_grad():
        leaf = embedding.detach().requires_grad_(True)
        embeds = model.language.embed(ids, model.image_tokens(leaf))
        # logits_to_keep: the LM head runs only on the explained positions (LanguageBranch.logits runs it on all).
        logits = model.language.llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask),
                                      logits_to_keep=keep, use_cache=False).logits  # (B, K, V)
        column = torch.searchsorted(keep, positions)
        picked = logits[torch.arange(len(plans), device=leaf.device)[:, None], column, token_ids]  # (B, L)
        count = picked.shape[1]
        if count == 1:
            grads = torch.autograd.grad(picked, leaf, grad_outputs=valid.to(picked.dtype))[0][:, None]
        else:
            basis = torch.eye(count, dtype=picked.dtype, device=leaf.device)[:, None, :] * valid
            grads = torch.autograd.grad(picked, leaf, grad_outputs=basis, is_grads_batched=True)[0].transpose(0, 1)
    return grads, picked.detach() * valid
