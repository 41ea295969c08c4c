"""The OWL side of GA: cos(h_m, g) for every box m and output, without a backward pass per box.

docs/design.md §3: h_m^cls = ∂z_m(c)/∂E and h_m^k = ∂box_m[k]/∂E; the paper loops N·(Q+4) backward passes.
Every output y_m^j depends on E only through the last encoder layer, and reads that layer's output on two rows
(patch m+1 and CLS, joined by the patch·CLS merge). For one image:
- the cotangents of all outputs on those rows come from one VJP batched over the outputs, because the heads,
  the layer norms and the MLP block act per token (``_residual_cotangents``): r̄_c on the residual stream
  r = E + attention(E), rows [0, m+1];
- norms ‖h_c‖: the attention and layer_norm1 VJPs of r̄_c summed in closed form (``_owl_norms``);
- numerators ⟨h_c, g⟩ = ⟨r̄_c, ṙ⟩ with ṙ the Jacobian-vector product of E ↦ r along g: one JVP
  (``attention_tangent``, batched over the tokens explained) serves every box and output.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.func import vjp, vmap

from owlens.explain._owl_layer import (
    LayerState,
    attention_block,
    attention_tangent,
    check_layer,
    layer_norm_backward,
    normalise,
)
from owlens.explain._owl_norms import attention_constants, squared_norms
from owlens.models.detection import DetectionBranch

__all__ = ["BoxCosines", "box_cosines", "compiled_box_cosines"]


@dataclass(frozen=True)
class BoxCosines:
    """cos(∂y_m/∂E, g_l) for one image. N boxes, L explained tokens, Q queries.

    cosines: (L, N, 5) class logit of token l's query, then cx, cy, w, h; 0 where a gradient is zero.
    boxes_cxcywh: (N, 4) the predicted boxes, normalised to [0, 1].
    logits: (N, Q) the class logits of every query.
    """

    cosines: torch.Tensor
    boxes_cxcywh: torch.Tensor
    logits: torch.Tensor


def _heads(branch: DetectionBranch, merged: torch.Tensor, query_embeds: torch.Tensor) -> torch.Tensor:
    """Merged patch·CLS tokens (N, d), queries (Q, d_text) → outputs (N, Q+4): class logits, then cx, cy, w, h.

    The modules ``DetectionBranch.features`` and ``detect`` call after the merge, in the same order.
    """
    features = branch.owl.layer_norm(merged)[None]  # (1, N, d)
    logits, _ = branch.owl.class_predictor(features, query_embeds[None].to(features.dtype), None)
    feature_map = features.reshape(1, *branch.grid, -1)
    boxes = branch.owl.box_predictor(features, feature_map)
    return torch.cat([logits, boxes], -1)[0]


def _residual_cotangents(branch: DetectionBranch, layer, state: LayerState, query_embeds: torch.Tensor):
    """Outputs y (N, P) and r̄ (P·N, 2, d): ∂y_m^j/∂r on the CLS row and on box m's own row, c = j·N + m.

    Past the attention everything acts per token but the patch·CLS merge; giving each box its own copy of the
    CLS row makes that per box too, so one VJP, batched over the P outputs, serves every box.
    """
    post = branch.vision.post_layernorm

    def block(r):  # the MLP half of the last layer
        return r + layer.mlp(layer.layer_norm2(r))

    cls_hidden = block(state.residual[0])  # (d,) the layer's output on the CLS row
    cls_xhat, cls_sigma = normalise(cls_hidden, post.eps)
    patches = state.residual[1:]  # (N, d)

    def outputs_of(rows, cls):  # cls (N, d): box m's copy of the normalised CLS row
        return _heads(branch, post(block(rows)) * cls, query_embeds)

    outputs, pullback = vjp(outputs_of, patches, post(cls_hidden).expand_as(patches).contiguous())
    count, width = outputs.shape[1], patches.shape[-1]
    # A cotangent of ones on output j gives every box's own gradient at once.
    basis = torch.eye(count, dtype=patches.dtype, device=patches.device)[:, None, :].expand(-1, len(patches), -1)
    own, per_box = vmap(pullback)(basis)  # (P, N, d) each
    cls = layer_norm_backward(cls_xhat, cls_sigma, post.weight, per_box).reshape(-1, width)
    _, cls_vjp = vjp(block, state.residual[0])
    if len(cls) > width:  # all P·N cotangents share the CLS row: its d x d Jacobian is cheaper
        cls = cls @ vmap(cls_vjp)(torch.eye(width, dtype=cls.dtype, device=cls.device))[0]
    else:
        cls = vmap(cls_vjp)(cls)[0]
    return outputs, torch.stack([cls, own.reshape(-1, width)], 1)


def box_cosines(branch: DetectionBranch, embedding: torch.Tensor, query_embeds: torch.Tensor,
                tangents: torch.Tensor, query_index: torch.Tensor, *, chunk: int | None = None) -> BoxCosines:
    """E of one image (T, d), queries (Q, d_text), g_l (L, T, d), query of each token (L,) → ``BoxCosines``."""
    layer = branch.vision.encoder.layers[-1]
    check_layer(layer)
    state = attention_block(layer, embedding)
    outputs, rbar = _residual_cotangents(branch, layer, state, query_embeds)  # (N, P), (P·N, 2, d)
    boxes, count = outputs.shape
    patch_rows = torch.arange(1, boxes + 1, device=rbar.device).repeat(count)
    rows = torch.stack([torch.zeros_like(patch_rows), patch_rows], 1)  # (P·N, 2)
    norms = squared_norms(attention_constants(layer, state), rbar, rows, chunk).clamp(min=0).sqrt().view(count, boxes)
    # y depends on E only through the residual stream r = E + attention: ⟨h_c, g⟩ = ⟨r̄_c, ṙ⟩, one JVP.
    rdot = attention_tangent(layer, state, tangents)  # (L, T, d)
    rbar = rbar.view(count, boxes, 2, -1)
    dots = (torch.einsum("pnd,ld->lpn", rbar[:, :, 0], rdot[:, 0])
            + torch.einsum("pnd,lnd->lpn", rbar[:, :, 1], rdot[:, 1:]))  # (L, P, N)
    queries, index = len(query_embeds), query_index.to(dots.device)
    tokens = torch.arange(len(tangents), device=dots.device)
    numer = torch.cat([dots[tokens, index][:, None], dots[:, queries:]], 1)  # (L, 5, N)
    denom = torch.cat([norms[index][:, None], norms[queries:].expand(len(tangents), -1, -1)], 1)
    denom = denom * tangents.flatten(1).norm(dim=1)[:, None, None]
    cosines = torch.where(denom > 0, numer / denom.clamp(min=torch.finfo(denom.dtype).tiny), 0.0)
    return BoxCosines(cosines.transpose(1, 2), outputs[:, queries:].detach(), outputs[:, :queries].detach())


class _Compiled:
    """``box_cosines`` through ``torch.compile``; the same numbers to float rounding (a test holds them equal).

    At the toy world's size (65 tokens x 128) the closed form runs about a thousand small kernels and their
    dispatch, not arithmetic, dominates: fusing them halves the time (docs/benchmarks.md). The first call compiles
    (tens of seconds on a CPU; again for each new shape). Compiling needs a C++ compiler on the CPU; when it
    fails, one warning and the eager function from then on: the result is the same, only slower.
    """

    def __init__(self):
        self._fn, self._failed = None, False

    def __call__(self, *args, **kwargs) -> BoxCosines:
        if self._failed:
            return box_cosines(*args, **kwargs)
        if self._fn is None:
            self._fn = torch.compile(box_cosines)
        try:
            return self._fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - told apart below
            result = box_cosines(*args, **kwargs)  # bad inputs raise here, as they would uncompiled
            self._failed = True  # eager worked: the compiler is what failed
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                          "GA continues without compiling (same results, slower)", RuntimeWarning, stacklevel=2)
            return result


compiled_box_cosines = _Compiled()  # one per process: compiled code is cached per model and shape
