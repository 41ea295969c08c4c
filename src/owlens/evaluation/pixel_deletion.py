"""Deletion and insertion in pixel space: image regions removed in the map's order, E recomputed by OWL.

Category: faithfulness. Reference: Petsiuk, Das & Saenko, RISE, BMVC 2018 (deletion and insertion games), played
on the image itself. The E-token games of ``insertion_deletion`` replace tokens of J's own embedding, a tool that
favours methods reading E; here no method is scored with its own tool: every variant image goes through the
whole of J (OWL's encoder anew, W, the LM).
- Regions: the image patches of the token grid, ranked as the E-token games rank tokens (``token_order``: the
  map averaged over each patch, ties by the same fixed seeded permutation).
- Removal: a removed patch shows the scene's **background** (for the toy world, the texture the objects were
  drawn on: removing every patch leaves the empty scene, not a grey or blurred one, so no out-of-distribution
  colour enters). Insertion starts from the background and restores patches, most relevant first.
- Score: the explained token's raw logit; deletion_auc lower is better, insertion_auc higher is better (trapezoid
  over the replaced/restored fraction 0..1).
"""

from __future__ import annotations

import numpy as np
import torch

from owlens.evaluation.insertion_deletion import DeletionInsertionResult, _area, token_order
from owlens.explain._borrow import borrowed

__all__ = ["PixelDeletionInsertion", "patch_images", "replaced_rows"]


def replaced_rows(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Token order (N,) and counts (S+1,) → bool (2(S+1), N): replaced tokens of each deletion row, then each
    insertion row (step k of deletion replaces the first counts[k] of the order; insertion restores them)."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    moved = rank[None] < counts[:, None]  # (S+1, N)
    return np.concatenate([moved, ~moved])


def patch_images(image: np.ndarray, background: np.ndarray, replaced: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """uint8 image and background (H, W, 3), replaced (R, N) over the grid's patches → uint8 (R, H, W, 3)."""
    rows, cols = grid
    height, width = image.shape[:2]
    r_edges = np.round(np.linspace(0, height, rows + 1)).astype(int)
    c_edges = np.round(np.linspace(0, width, cols + 1)).astype(int)
    cell_of = (np.searchsorted(r_edges, np.arange(height), side="right") - 1)[:, None] * cols + \
        (np.searchsorted(c_edges, np.arange(width), side="right") - 1)[None, :]  # (H, W) patch of each pixel
    pixel_replaced = replaced[:, cell_of]  # (R, H, W)
    return np.where(pixel_replaced[..., None], background[None], image[None])


class PixelDeletionInsertion:
    """``PixelDeletionInsertion(model)(image, background, input_ids, token_id, saliency_map)``.

    image, background: uint8 (H, W, 3) at the detector's input resolution; input_ids: the sequence (T,) whose last
    position predicts ``token_id``. steps: replacement steps from 0 to N patches (None: one patch per step).
    """

    name = "deletion_insertion_pixel"
    higher_is_better = {"deletion_auc_pixel": False, "insertion_auc_pixel": True}
    category = "faithfulness"
    reference = "Petsiuk et al., RISE, BMVC 2018 (played on the image, E recomputed)"

    def __init__(self, model, *, steps: int | None = None, batch_size: int = 32, seed: int = 0):
        tokens = model.grid[0] * model.grid[1]
        if steps is not None and not 1 <= steps <= tokens:
            raise ValueError(f"steps must lie in 1..{tokens} (the image patches); received {steps}")
        self.model, self.batch_size, self.seed = model, batch_size, seed
        self.counts = np.round(np.linspace(0, tokens, (steps or tokens) + 1)).astype(int)

    def __call__(self, image: np.ndarray, background: np.ndarray, input_ids, token_id: int,
                 saliency_map) -> DeletionInsertionResult:
        image, background = np.asarray(image), np.asarray(background)
        if image.shape != background.shape or image.ndim != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image and background of one shape (H, W, 3); received "
                             f"{image.dtype} {image.shape} and {background.dtype} {background.shape}")
        order = token_order(saliency_map, self.model.grid, self.seed)
        images = patch_images(image, background, replaced_rows(order, self.counts), self.model.grid)
        scores = self._scores(images, torch.as_tensor(input_ids), token_id)
        fractions = self.counts / (self.model.grid[0] * self.model.grid[1])
        deletion, insertion = scores[:len(self.counts)], scores[len(self.counts):]
        return DeletionInsertionResult(_area(deletion, fractions), _area(insertion, fractions), fractions.tolist(),
                                       deletion.tolist(), insertion.tolist())

    @torch.no_grad()
    def _scores(self, images: np.ndarray, input_ids: torch.Tensor, token_id: int) -> np.ndarray:
        ids = input_ids.to(self.model.device).flatten()
        out = []
        with borrowed(self.model):
            for start in range(0, len(images), self.batch_size):
                embedding = self.model.encode_images(list(images[start:start + self.batch_size]))
                embeds = self.model.language.embed(ids.expand(len(embedding), -1), self.model.image_tokens(embedding))
                logits = self.model.language.llava(inputs_embeds=embeds, logits_to_keep=1, use_cache=False).logits
                out.append(logits[:, -1, token_id].float().cpu())
        return torch.cat(out).double().numpy()
