"""‖h‖² for many per-box gradients at once, without materialising any of them (docs/design.md §3).

Each box output's cotangent c on the residual stream r = E + attention(E) sits on two rows S_c = {0 (CLS),
t_c (its box's patch token)}: r̄ (2, d) (``_owl_grads``). Through attention it spreads to every token k, but
only as

    ā_k = Σ_{i∈S, h} [ P^h_ik (ō^h_i W_v,h) + dS^h_ik (s q^h_i W_k,h) ]  (+ q̄_k W_q for k ∈ S)

a combination, with coefficients α_k ∈ R^R, of R = 4H basis vectors B_c (R, d) shared by all tokens. The
gradient at k is layer_norm1's VJP M_k ā_k, M_k = (1/σ_k)(I - 11ᵀ/d - x̂_k x̂_kᵀ/d) Γ, so with
C_k = I - 11ᵀ/d - x̂x̂ᵀ/d and C_k² = I - 11ᵀ/d - (2/d - ‖x̂_k‖²/d²) x̂x̂ᵀ (x̂ has zero mean):

    ‖M_k ā_k‖² = (α_kᵀ G α_k - (α_k·b)²/d - (2/d - ‖x̂_k‖²/d²)(α_k·χ_k)²) / σ_k²

with G = (B Γ)(B Γ)ᵀ (R, R), b = B γ (R), χ_k = B (γ ⊙ x̂_k) (R); the sum over k weights these by 1/σ_k²
and becomes ⟨G, α D αᵀ⟩, so no (T, d) gradient is ever formed. Rows in S_c are added exactly. Per cotangent
that costs O(d² + R²·(d + T) + T·d) instead of a backward pass through the layer, O(T·d² + T²·d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from owlens.explain._owl_layer import LayerState, layer_norm_backward, split_heads

__all__ = ["AttentionConstants", "attention_constants", "squared_norms"]


@dataclass(frozen=True)
class AttentionConstants:
    """What every cotangent of one image shares (T tokens, H heads of width e, d = H·e)."""

    state: LayerState
    gamma: torch.Tensor  # (d,) layer_norm1 weight Γ
    w_q: torch.Tensor  # (d, d) q_proj weight (q = a W_qᵀ, so ā += q̄ W_q)
    w_v: torch.Tensor  # (H, e, d) v_proj weight split by output head
    w_o: torch.Tensor  # (d, d) out_proj weight
    probs_rows: torch.Tensor  # (T, H, T) the attention probabilities, query row first (contiguous for gathers)
    key_basis: torch.Tensor  # (T, H, d) s·q^h_i W_k,h: the K-type basis vector of query row i, head h
    key_gram: torch.Tensor  # (T, 2H, 2H) Gram (with Γ²) of the K-type basis of rows [0, t]
    key_chi: torch.Tensor  # (T, H, T) s·q^h_i · (W_k,h (γ ⊙ x̂_k)): the K-type χ entries
    value_shift: torch.Tensor  # (H, e) W_v β + b_v: v_k - W_v (γ ⊙ x̂_k), the same for every token k
    weights: torch.Tensor  # (T,) 1/σ_k²
    along_weights: torch.Tensor  # (T,) (2/d - ‖x̂_k‖²/d²) / σ_k²
    scale: float


def attention_constants(layer: nn.Module, state: LayerState) -> AttentionConstants:
    """Precompute the per-image constants: O(T·d² + T²·d), about one forward of the layer."""
    attn, norm = layer.self_attn, layer.layer_norm1
    heads, width = attn.num_heads, attn.head_dim
    tokens, d = state.xhat.shape
    gamma = norm.weight
    w_q, w_k, w_v, w_o = (p.weight for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj))
    key_basis = attn.scale * torch.einsum("hte,hed->thd", state.q, w_k.view(heads, width, d))
    pairs = torch.cat([key_basis[:1].expand(tokens, -1, -1), key_basis], 1) * gamma  # (T, 2H, d)
    key_chi = attn.scale * torch.einsum("hie,hke->ihk", state.q,
                                        split_heads((state.xhat * gamma) @ w_k.T, heads))
    value_shift = attn.v_proj(norm.bias[None])[0].view(heads, width)
    weights = state.sigma.pow(-2)
    along_weights = (2 / d - state.xhat.pow(2).sum(-1) / d**2) * weights
    return AttentionConstants(state, gamma, w_q, w_v.view(heads, width, d), w_o,
                              state.probs.transpose(0, 1).contiguous(), key_basis,
                              pairs @ pairs.transpose(1, 2), key_chi, value_shift, weights, along_weights,
                              attn.scale)


def squared_norms(consts: AttentionConstants, rbar: torch.Tensor, rows: torch.Tensor,
                  chunk: int | None = None) -> torch.Tensor:
    """‖∂y_c/∂E‖² for C cotangents given r̄ (C, 2, d) on rows (C, 2) = [0, t_c] of the MLP block's input → (C,).

    ``chunk`` cotangents at a time. By default a (chunk, 4H, T) block holds about 2^17 numbers, and chunk is at
    least 32: the work is memory-bound, so blocks that stay in cache pay, until Python's per-chunk cost shows
    (measured fastest on the toy and the reference shapes).
    """
    heads, tokens = consts.state.probs.shape[:2]
    chunk = chunk or max(32, (1 << 17) // (4 * heads * tokens))
    return torch.cat([_chunk(consts, rbar[s:s + chunk], rows[s:s + chunk]) for s in range(0, len(rows), chunk)])


def _chunk(consts: AttentionConstants, rbar: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    state = consts.state
    heads, width, d = consts.w_v.shape
    count, flat = len(rbar), rows.reshape(-1)
    obar = (rbar @ consts.w_o).view(count, 2, heads, width)  # ō (C, 2, H, e)
    probs = consts.probs_rows.index_select(0, flat).view(count, 2 * heads, -1)  # V-type α (C, 2H, T)
    abar = torch.einsum("cihe,hke->cihk", obar, state.v).reshape(probs.shape)  # ∂/∂P
    weighted = probs * abar
    dscores = weighted - probs * weighted.sum(-1, keepdim=True)  # softmax VJP: K-type α (C, 2H, T)
    # χ of the V-type basis is ō·(v_k - shift) = ∂/∂P - ō·shift: no second pass over the values.
    shift = (obar * consts.value_shift).sum(-1).view(count, -1, 1)  # (C, 2H, 1)
    key_chi = consts.key_chi.index_select(0, flat).view(probs.shape)
    along = (weighted - probs * shift).sum(1) + (dscores * key_chi).sum(1)  # α_k·χ_k (C, T)
    value_basis = torch.einsum("cihe,hed->cihd", obar, consts.w_v).reshape(count, -1, d)  # B_c, V-type (C, 2H, d)
    key_basis = consts.key_basis.index_select(0, flat).view(value_basis.shape)  # B_c, K-type
    mask = consts.weights.expand(count, -1).scatter(1, rows, 0.0)  # rows in S are added exactly below
    value_scaled, key_scaled = value_basis * consts.gamma, key_basis * consts.gamma
    quad = _gram_sum(value_scaled, probs, mask, value_scaled, probs)
    quad = quad + 2 * _gram_sum(value_scaled, probs, mask, key_scaled, dscores)
    quad = quad + (consts.key_gram[rows[:, 1]] * ((dscores * mask[:, None]) @ dscores.transpose(1, 2))).sum((1, 2))
    ones = (value_scaled.sum(-1)[:, None] @ probs + key_scaled.sum(-1)[:, None] @ dscores)[:, 0]  # α_k·b (C, T)
    dense = quad - (ones.pow(2) * mask).sum(1) / d - (along.pow(2) * consts.along_weights * (mask > 0)).sum(1)
    # Rows k ∈ S: ā_k = α_kᵀ B_c + q̄_k W_q, then the residual r̄ joins after layer_norm1's VJP.
    at = rows[:, None, :].expand(-1, probs.shape[1], -1)
    qbar = consts.scale * torch.einsum("cihk,hke->cihe", dscores.view(count, 2, heads, -1), state.k)
    abar_rows = (probs.gather(2, at).transpose(1, 2) @ value_basis + dscores.gather(2, at).transpose(1, 2) @ key_basis
                 + qbar.reshape(count, 2, d) @ consts.w_q)  # (C, 2, d)
    xbar_rows = rbar + layer_norm_backward(state.xhat[rows], state.sigma[rows], consts.gamma, abar_rows)
    return dense + xbar_rows.pow(2).sum((1, 2))


def _gram_sum(left: torch.Tensor, left_coef: torch.Tensor, mask: torch.Tensor, right: torch.Tensor,
              right_coef: torch.Tensor) -> torch.Tensor:
    """Σ_k mask_k (α_k^L)ᵀ (L Rᵀ) α_k^R = ⟨L Rᵀ, α^L diag(mask) α^Rᵀ⟩ for bases (C, n, d), coefficients (C, n, T)."""
    return ((left @ right.transpose(1, 2)) * ((left_coef * mask[:, None]) @ right_coef.transpose(1, 2))).sum((1, 2))
