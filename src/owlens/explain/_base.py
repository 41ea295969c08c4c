"""The pipeline every explainer shares, GA included: inputs, target semantics, borrowed state, the ``Saliency``.

A method only says how it turns planned tokens into maps (``_explain``); this base checks the model and the
query template once, and resolves the target the same way for all (``targets.plan_tokens``: the last sub-token
of a string, teacher forcing for answers, the detector query "a photo of a {token}" unless overridden), so that
every method explains the same logit of the same token.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from owlens.explain._borrow import borrowed
from owlens.explain.inputs import ExplainInputs, as_inputs
from owlens.explain.maps import paint_boxes
from owlens.explain.saliency import Saliency
from owlens.explain.targets import AnswerTarget, TokenPlan, TokenTarget, as_target, plan_tokens
from owlens.queries import QUERY_TEMPLATE, check_query_template

__all__ = ["Explainer", "grid_to_image", "grid_saliency"]


class Explainer:
    """``Method(model).explain((image, prompt), target="circle") -> Saliency``; ``explain_all`` for batches/answers."""

    method = ""

    def __init__(self, model, *, query_template: str = QUERY_TEMPLATE):
        check_query_template(query_template)
        if model.processor is None:
            raise ValueError(f"{self.method} needs the model's processor (its tokenizers name tokens and queries); "
                             "load the model with JointModel.from_pretrained or pass processor= to JointModel")
        self.model, self.query_template = model, query_template

    def explain(self, inputs, target: str | int | TokenTarget, *, query: str | None = None) -> Saliency:
        """One image, one token. ``inputs``: ``ExplainInputs`` or (image, prompt); ``query`` overrides the concept."""
        inputs = as_inputs(self.model, inputs)
        if inputs.batch != 1:
            raise ValueError(f"explain takes one image; received {inputs.batch}: use explain_all for a batch")
        if isinstance(target, AnswerTarget):
            raise ValueError("an AnswerTarget explains several tokens: use explain_all")
        return self.explain_all(inputs, target, query=query)[0][0]

    def explain_all(self, inputs, target: str | int | TokenTarget | AnswerTarget,
                    *, query: str | None = None) -> list[list[Saliency]]:
        """Every image of a batch, and every token an ``AnswerTarget`` names → ``[image][token]`` saliencies."""
        inputs = as_inputs(self.model, inputs)
        target = as_target(target, query)
        with borrowed(self.model), self._borrowed():
            plans = plan_tokens(self.model, inputs.input_ids, inputs.attention_mask, inputs.embedding, target,
                                self.query_template)
            if not any(plan.positions for plan in plans):
                return [[] for _ in plans]
            return self._explain(inputs, plans)

    def _borrowed(self) -> AbstractContextManager:
        """More state to borrow for the whole call (the attention baselines need eager attention)."""
        return nullcontext()

    def _explain(self, inputs: ExplainInputs, plans: list[TokenPlan]) -> list[list[Saliency]]:
        raise NotImplementedError


def grid_to_image(values: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Per-token values (rows·cols,) in the grid's row-major order → map (H, W) float32 for an image of
    ``image_size`` (width, height).

    Each token paints its own cell, the image region its patch covers; where a pixel straddles two cells (sizes
    that the grid does not divide) it keeps the larger value, as ``maps.paint_boxes`` paints boxes.
    """
    rows, cols = grid
    if values.numel() != rows * cols:
        raise ValueError(f"expected one value per grid cell ({rows}x{cols} = {rows * cols}); received {values.numel()}")
    width, height = image_size
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    cells = torch.stack([c * width / cols, r * height / rows, (c + 1) * width / cols, (r + 1) * height / rows], -1)
    return paint_boxes(cells.view(-1, 4), values.detach().cpu().double().flatten(), image_size)


def grid_saliency(values: torch.Tensor, model, plan: TokenPlan, t: int, logit: float,
                  image_size: tuple[int, int], method: str) -> Saliency:
    """Non-negative per-token relevance (N,) of token t of ``plan`` → ``Saliency`` (map scaled by its maximum)
    for an image of ``image_size`` (width, height).

    Scaling by the maximum, not min-max, keeps zero as "no relevance" and the ratios between tokens (relevance
    mass depends on them); an all-zero relevance stays an all-zero map.
    """
    values = values.detach().double().cpu()
    if bool((values < 0).any()):
        raise ValueError(f"{method}: expected non-negative relevance per token; received a minimum of "
                         f"{float(values.min())}")
    peak = float(values.max())
    scaled = values / peak if peak > 0 else values
    return Saliency(map=grid_to_image(scaled, model.grid, image_size), token=plan.tokens[t],
                    token_id=plan.token_ids[t], position=plan.positions[t], logit=logit, query=plan.queries[t],
                    method=method, image_size=image_size)
