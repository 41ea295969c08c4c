"""The attention half of OWL's last encoder layer, written out so that its derivatives can be taken apart.

The HF layer runs attention through SDPA, which has no forward-mode derivative on the CPU and does not expose
the attention probabilities that the low-rank per-box norms of ``_owl_norms`` need (docs/design.md §3).
``attention_block`` is the first half of ``OwlViTEncoderLayer.forward`` (x + attention(layer_norm1(x))) from the
module's own weights; the MLP half acts per token and is called as the module itself. The tests check both
halves together against the module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LayerState", "attention_block", "attention_tangent", "check_layer", "layer_norm_backward", "normalise",
           "split_heads"]


@dataclass(frozen=True)
class LayerState:
    """The attention half of the last layer evaluated on E of one image (T = 1+N tokens, H heads of width e, d = H·e).

    xhat: (T, d) layer_norm1's normalised input (x - mean) / sigma.
    sigma: (T,) layer_norm1's sqrt(var + eps).
    q, k, v: (H, T, e) attention projections (q before the attention scale).
    probs: (H, T, T) attention probabilities, query token first.
    residual: (T, d) x + attention, the MLP block's input (the MLP half acts per token: ``_owl_grads``).
    """

    xhat: torch.Tensor
    sigma: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    residual: torch.Tensor


def check_layer(layer: nn.Module) -> None:
    """Refuse layers that are not CLIP-style pre-norm encoder layers (OWL-ViT and OWLv2 both are)."""
    needed = ("layer_norm1", "layer_norm2", "mlp", "self_attn")
    attention = ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim", "scale")
    missing = [n for n in needed if not hasattr(layer, n)]
    missing += [f"self_attn.{n}" for n in attention if not missing and not hasattr(layer.self_attn, n)]
    if missing:
        raise TypeError(f"expected a CLIP-style encoder layer ({', '.join(needed)}); {type(layer).__name__} "
                        f"lacks {', '.join(missing)}")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(T, H·e) projections → (H, T, e): one view per attention head (no copy)."""
    return x.view(x.shape[0], heads, -1).transpose(0, 1)


def attention_block(layer: nn.Module, x: torch.Tensor) -> LayerState:
    """The first half of the layer, x + attention(layer_norm1(x)), with what its backward needs."""
    attn, norm = layer.self_attn, layer.layer_norm1
    xhat, sigma = normalise(x, norm.eps)
    normed = xhat * norm.weight + norm.bias
    q, k, v = (split_heads(proj(normed), attn.num_heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    scores = attn.scale * q @ k.transpose(-1, -2)  # (H, T, T)
    # Softmax in at least float32, as HF's eager attention does for half precision.
    probs = torch.softmax(scores, -1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(scores.dtype)
    mixed = (probs @ v).transpose(0, 1).reshape(x.shape)  # (T, d)
    residual = x + attn.out_proj(mixed)
    return LayerState(xhat, sigma, q, k, v, probs, residual)


def normalise(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm's statistics of (..., d): x̂ = (x - mean) / σ (..., d) and σ = sqrt(var + eps) (...)."""
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    return (x - x.mean(-1, keepdim=True)) / sigma, sigma.squeeze(-1)


def attention_tangent(layer: nn.Module, state: LayerState, tangents: torch.Tensor) -> torch.Tensor:
    """The JVP of x ↦ x + attention(layer_norm1(x)) at ``state`` along tangents (L, T, d) → ṙ (L, T, d).

    Written out from the state rather than by ``torch.func.jvp`` (which the tests compare it with): forward-mode
    linear layers also multiply the weights' zero tangents, and SDPA has no forward derivative on the CPU.
    """
    attn, norm = layer.self_attn, layer.layer_norm1
    count, tokens, width = tangents.shape
    normed = norm.weight * layer_norm_backward(state.xhat, state.sigma, 1.0, tangents)  # LN's Jacobian is symmetric
    q_dot, k_dot, v_dot = (nn.functional.linear(normed, p.weight).view(count, tokens, attn.num_heads, -1)
                           .transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # (L, H, T, e)
    scores_dot = attn.scale * (q_dot @ state.k.transpose(-1, -2) + state.q @ k_dot.transpose(-1, -2))
    probs_dot = state.probs * (scores_dot - (state.probs * scores_dot).sum(-1, keepdim=True))
    mixed_dot = (probs_dot @ state.v + state.probs @ v_dot).transpose(1, 2).reshape(count, tokens, width)
    return tangents + nn.functional.linear(mixed_dot, attn.out_proj.weight)


def layer_norm_backward(xhat: torch.Tensor, sigma: torch.Tensor, weight: torch.Tensor | float,
                        cotangent: torch.Tensor) -> torch.Tensor:
    """VJP of a LayerNorm at normalised inputs xhat (..., d) with sigma (...): (1/σ)(w - mean(w) - x̂·mean(w x̂)).

    w = weight ⊙ cotangent. The operator is symmetric, which ``_owl_norms`` relies on.
    """
    scaled = weight * cotangent
    centred = scaled - scaled.mean(-1, keepdim=True) - xhat * (scaled * xhat).mean(-1, keepdim=True)
    return centred / sigma.unsqueeze(-1)
