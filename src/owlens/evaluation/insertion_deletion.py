"""Deletion and insertion AUC on the MLLM's own logit, by replacing image tokens of E in the map's order.

Category: faithfulness. Reference: Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018 (deletion and insertion games), played here on the tokens of J's shared embedding E
instead of pixels (docs/design.md §3).
- deletion: lower is better. Image tokens are replaced, most relevant first; a faithful map makes the
  explained token's score fall fast.
- insertion: higher is better. Starting from every token replaced, tokens are restored, most relevant first.
Score: the explained token's **raw logit** (pre-softmax) at the position that predicts it, the quantity GA
explains (``score="probability"`` plays on its softmax probability instead). AUC: trapezoid over the replaced
(restored) fraction 0..1. Both games start and end at the same two sequences for every map, so methods differ
only in the path between.
Ranking: the map is averaged over each patch's pixels (adaptive average pooling to the grid), tokens sorted by
that value, highest first; equal values are ordered by one fixed seeded permutation of the tokens, the same for
every map, so that no method gains from raster order.
Replacement: a given token (d,), e.g. the mean patch token of E over a reference set of images (what the toy
benchmark uses); by default the image's own mean patch token. The CLS token is never touched (W reads patch
tokens only). Every curve is computed in batches of modified E's through W and the LM, one pass per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from owlens.evaluation._checks import as_map
from owlens.explain._borrow import borrowed
from owlens.results import FieldsResult

__all__ = ["DeletionInsertion", "DeletionInsertionResult", "token_order"]


@dataclass(frozen=True)
class DeletionInsertionResult(FieldsResult):
    """fractions: (S+1,) share of tokens replaced (deletion) or restored (insertion), 0 to 1.
    deletion, insertion: (S+1,) the score at each fraction; *_auc their trapezoid areas over the fractions.
    """

    deletion_auc: float
    insertion_auc: float
    fractions: list[float]
    deletion: list[float]
    insertion: list[float]


def token_order(saliency_map, grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Map (H, W) → token indices (N,), most relevant first (patch averages; ties by a fixed seeded permutation)."""
    values = torch.from_numpy(as_map(saliency_map))[None, None]
    per_token = F.adaptive_avg_pool2d(values, grid).flatten().numpy()  # (N,) row-major, as the patch tokens
    permutation = np.random.default_rng(seed).permutation(per_token.size)
    return permutation[np.argsort(-per_token[permutation], kind="stable")]


class DeletionInsertion:
    """``DeletionInsertion(model)(embedding, input_ids, token_id, saliency_map) -> DeletionInsertionResult``.

    steps: how many replacement steps from 0 to N tokens (None: one token per step). batch_size: sequences
    per LM pass. seed: the tie-breaking permutation.
    """

    name = "deletion_insertion"
    higher_is_better = {"deletion_auc": False, "insertion_auc": True}
    category = "faithfulness"
    reference = "Petsiuk et al., RISE, BMVC 2018"

    def __init__(self, model, *, steps: int | None = None, score: str = "logit", replacement=None,
                 batch_size: int = 64, seed: int = 0):
        if score not in ("logit", "probability"):
            raise ValueError(f"score must be 'logit' or 'probability'; received {score!r}")
        tokens = model.grid[0] * model.grid[1]
        if steps is not None and not 1 <= steps <= tokens:
            raise ValueError(f"steps must lie in 1..{tokens} (the image tokens); received {steps}")
        self.model, self.score, self.batch_size, self.seed = model, score, batch_size, seed
        self.counts = np.round(np.linspace(0, tokens, (steps or tokens) + 1)).astype(int)  # tokens moved per step
        self.replacement = None if replacement is None else torch.as_tensor(replacement)

    def __call__(self, embedding: torch.Tensor, input_ids, token_id: int, saliency_map) -> DeletionInsertionResult:
        """E of one image (1+N, d) or (1, 1+N, d); the sequence (T,) whose last position predicts ``token_id``."""
        embedding = embedding[0] if embedding.ndim == 3 else embedding
        tokens = self.model.grid[0] * self.model.grid[1]
        if embedding.ndim != 2 or embedding.shape[0] != 1 + tokens:
            raise ValueError(f"expected E of one image shaped (1+{tokens}, d); received {tuple(embedding.shape)}")
        order = torch.from_numpy(token_order(saliency_map, self.model.grid, self.seed)).to(embedding.device)
        replacement = embedding[1:].mean(0) if self.replacement is None else self.replacement
        replacement = replacement.to(embedding.device, embedding.dtype)
        # rank[i] = place of token i in the order; step k moves the tokens whose rank is below counts[k].
        rank = torch.empty_like(order)
        rank[order] = torch.arange(tokens, device=order.device)
        moved = rank[None] < torch.as_tensor(self.counts, device=order.device)[:, None]  # (S+1, N)
        replaced = torch.cat([moved, ~moved])  # deletion rows, then insertion rows
        variants = embedding.expand(len(replaced), -1, -1).clone()
        variants[:, 1:][replaced] = replacement
        scores = self._scores(variants, torch.as_tensor(input_ids), token_id)
        fractions = self.counts / tokens
        deletion, insertion = scores[:len(moved)], scores[len(moved):]
        return DeletionInsertionResult(_area(deletion, fractions), _area(insertion, fractions), fractions.tolist(),
                                       deletion.tolist(), insertion.tolist())

    @torch.no_grad()
    def _scores(self, variants: torch.Tensor, input_ids: torch.Tensor, token_id: int) -> np.ndarray:
        ids = input_ids.to(self.model.device).flatten()
        out = []
        with borrowed(self.model):
            for start in range(0, len(variants), self.batch_size):
                chunk = variants[start:start + self.batch_size]
                embeds = self.model.language.embed(ids.expand(len(chunk), -1), self.model.image_tokens(chunk))
                logits = self.model.language.llava(inputs_embeds=embeds, logits_to_keep=1,
                                                   use_cache=False).logits[:, -1].float()  # (b, V)
                picked = logits.log_softmax(-1).exp() if self.score == "probability" else logits
                out.append(picked[:, token_id].cpu())
        return torch.cat(out).double().numpy()


def _area(curve: np.ndarray, fractions: np.ndarray) -> float:
    """Trapezoid rule (``np.trapezoid`` is numpy ≥ 2 only)."""
    return float(((curve[1:] + curve[:-1]) / 2 * np.diff(fractions)).sum())
