"""The LM's logits at the last position only, with its last decoder layer computed at that position alone.

Evaluations read one number per row (the next token's logit) over thousands of rows. Every layer but the last
must run at every position (the next layer attends to all of them), but the last layer's outputs elsewhere
feed nothing: only its keys and values are needed there. Skipping its query, attention output and MLP at the
other positions saves about a fifth of the LM's work at the toy world's size, with the same logits to float
tolerance (tested against the full forward).

Written for the Llama decoder (LLaVA-1.5's language model and the toy world's); any other architecture takes
the full forward with ``logits_to_keep=1``, which gives the same numbers without the saving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

__all__ = ["last_position_logits", "supports_last_position"]


def supports_last_position(llava: nn.Module) -> bool:
    """Whether the fast tail applies: a Llama text model (no sliding window, no logit soft-capping)."""
    base = getattr(getattr(llava, "model", None), "language_model", None)
    config = getattr(base, "config", None)
    return (getattr(config, "model_type", None) == "llama" and hasattr(llava, "lm_head")
            and type(base.layers[-1]).__name__ == "LlamaDecoderLayer")


def last_position_logits(llava: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         positions: torch.Tensor | None = None) -> torch.Tensor:
    """inputs_embeds (B, T, D), attention_mask (B, T) (left padding), positions (B, T) → raw logits (B, V) of each
    row's last position. ``positions`` default to 0..T-1; left-padded rows need theirs (``language.position_ids``).
    """
    if not supports_last_position(llava):
        return llava(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=positions,
                     logits_to_keep=1, use_cache=False).logits[:, -1]
    base = llava.model.language_model
    batch, length, _ = inputs_embeds.shape
    if positions is None:
        positions = torch.arange(length, device=inputs_embeds.device)[None].expand(batch, -1)
    hidden = inputs_embeds
    cos, sin = base.rotary_emb(hidden, position_ids=positions)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                              position_ids=positions)
    for layer in base.layers[:-1]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=positions)

    last = base.layers[-1]
    attention = last.self_attn
    x = last.input_layernorm(hidden)  # (B, T, D)
    head = attention.head_dim
    query = attention.q_proj(x[:, -1:]).view(batch, 1, -1, head).transpose(1, 2)  # (B, H, 1, hd)
    key = attention.k_proj(x).view(batch, length, -1, head).transpose(1, 2)  # (B, H_kv, T, hd)
    value = attention.v_proj(x).view(batch, length, -1, head).transpose(1, 2)
    query, _ = apply_rotary_pos_emb(query, query, cos[:, -1:], sin[:, -1:])
    _, key = apply_rotary_pos_emb(key, key, cos, sin)
    key = repeat_kv(key, attention.num_key_value_groups)
    value = repeat_kv(value, attention.num_key_value_groups)
    # The last query sees every key of its row (causality allows all of them) except left padding.
    keys_seen = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=keys_seen, scale=attention.scaling)
    hidden = hidden[:, -1:] + attention.o_proj(attended.transpose(1, 2).reshape(batch, 1, -1))
    hidden = hidden + last.mlp(last.post_attention_layernorm(hidden))
    return llava.lm_head(base.norm(hidden))[:, 0]
