"""Every method's deletion/insertion games of one case at once: the same numbers, far fewer LM rows.

``DeletionInsertion`` and ``PixelDeletionInsertion`` play one map at a time, which is the reference. An
evaluation plays several maps on the same case, and their games share most of their work:
- W is a per-token map, so W(E) and W(replacement) are computed once per case and each E-token variant is
  assembled from them in W's output space, instead of W running on every variant (about 40% of a game);
- rows are deduplicated across the maps and games of the case (every deletion game starts at the same
  sequence and every insertion game ends there; maps that rank alike share whole curves);
- the LM runs in chunks of ``batch_size`` rows, its last layer and head on the read position only
  (``models.last_position``).
Results equal the one-map classes to float tolerance (tested).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from owlens.evaluation.insertion_deletion import DeletionInsertionResult, _area, token_order
from owlens.evaluation.pixel_deletion import patch_images, replaced_rows
from owlens.explain._borrow import borrowed

__all__ = ["CaseGames"]


class CaseGames:
    """``CaseGames(model, steps=16, pixel_steps=16)(embedding, ids, token_id, maps, image=..., background=...)``.

    Returns ``{name: {"tokens": DeletionInsertionResult, "pixels": DeletionInsertionResult | None}}`` for the
    maps ``{name: (H, W) map}``; the pixel games are played when ``image`` and ``background`` (uint8 (H, W, 3))
    are given. ``replacement`` (d,): the E token the E games put in (default: the image's mean patch token).
    """

    def __init__(self, model, *, steps: int | None = 16, pixel_steps: int | None = 16, replacement=None,
                 batch_size: int = 32, seed: int = 0):
        tokens = model.grid[0] * model.grid[1]
        for name, value in (("steps", steps), ("pixel_steps", pixel_steps)):
            if value is not None and not 1 <= value <= tokens:
                raise ValueError(f"{name} must lie in 1..{tokens} (the image tokens); received {value}")
        self.model, self.batch_size, self.seed = model, batch_size, seed
        self.counts = np.round(np.linspace(0, tokens, (steps or tokens) + 1)).astype(int)
        self.pixel_counts = np.round(np.linspace(0, tokens, (pixel_steps or tokens) + 1)).astype(int)
        self.replacement = None if replacement is None else torch.as_tensor(replacement)

    def __call__(self, embedding: torch.Tensor, input_ids, token_id: int, maps: Mapping[str, object], *,
                 image: np.ndarray | None = None, background: np.ndarray | None = None) -> dict[str, dict]:
        embedding = embedding[0] if embedding.ndim == 3 else embedding  # (1+N, d)
        orders = {name: token_order(m, self.model.grid, self.seed) for name, m in maps.items()}
        ids = torch.as_tensor(input_ids).to(self.model.device).flatten()
        token_rows = {name: replaced_rows(order, self.counts) for name, order in orders.items()}
        tokens, filler = self._image_tokens(embedding)

        def token_variants(rows: np.ndarray) -> torch.Tensor:  # (R, N, D): E's tokens with the rows' replaced
            return torch.where(torch.from_numpy(rows).to(tokens.device)[..., None], filler, tokens)

        token_scores = self._unique_scores(token_rows, token_variants, ids, token_id)
        pixel_scores = None
        if image is not None and background is not None:
            pixel_rows = {name: replaced_rows(order, self.pixel_counts) for name, order in orders.items()}
            pixel_scores = self._unique_scores(
                pixel_rows, lambda rows: self._pixel_variants(image, background, rows), ids, token_id)
        return {name: {"tokens": _result(token_scores[name], self.counts),
                       "pixels": None if pixel_scores is None else _result(pixel_scores[name], self.pixel_counts)}
                for name in maps}

    def _unique_scores(self, rows_by_name: dict[str, np.ndarray], variants, ids, token_id) -> dict[str, np.ndarray]:
        names = list(rows_by_name)
        stacked = np.concatenate([rows_by_name[n] for n in names])  # (M·R, N)
        unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
        scores = np.concatenate([self._read(variants(unique[s:s + self.batch_size]), ids, token_id)
                                 for s in range(0, len(unique), self.batch_size)])
        per_row = scores[inverse.reshape(-1)]
        size = len(stacked) // len(names)
        return {n: per_row[k * size:(k + 1) * size] for k, n in enumerate(names)}

    @torch.no_grad()
    def _image_tokens(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W(E[1:]) (N, D) and W(replacement) (D,), once per case: W is applied token by token."""
        replacement = embedding[1:].mean(0) if self.replacement is None else self.replacement
        replacement = replacement.to(embedding.device, embedding.dtype)
        tokens = self.model.image_tokens(embedding[None])[0]
        filler = self.model.alignment(replacement[None, None].to(self.model.dtype))[0, 0]
        return tokens, filler

    def _pixel_variants(self, image: np.ndarray, background: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        images = patch_images(np.asarray(image), np.asarray(background), rows, self.model.grid)
        with torch.no_grad():
            return self.model.image_tokens(self.model.encode_images(list(images)))  # (R, N, D)

    @torch.no_grad()
    def _read(self, image_tokens: torch.Tensor, ids: torch.Tensor, token_id: int) -> np.ndarray:
        with borrowed(self.model):
            embeds = self.model.language.embed(ids.expand(len(image_tokens), -1), image_tokens)
            logits = self.model.language.last_logits(embeds)  # (R, V): one case's rows share ids, no padding
        return logits[:, token_id].float().cpu().double().numpy()


def _result(scores: np.ndarray, counts: np.ndarray) -> DeletionInsertionResult:
    fractions = counts / counts[-1]
    deletion, insertion = scores[:len(counts)], scores[len(counts):]
    return DeletionInsertionResult(_area(deletion, fractions), _area(insertion, fractions), fractions.tolist(),
                                   deletion.tolist(), insertion.tolist())
