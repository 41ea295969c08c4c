"""Causal truth in the toy world: which object does the explained logit depend on? Re-render and see.

A toy scene keeps the background its objects were drawn on and objects never overlap, so the scene *without*
object k is exact (``toyworld.world.without``): the same picture with k's pixels showing the background. For a
case (scene, prompt, explained token) every object is taken out in turn, each variant goes through the whole
of J (OWL encodes it anew, W, the LM), and the explained token's raw logit is read at the same position, all
variants of a case in one batch. The **causal object** is the one whose removal lowers that logit most; a
case whose largest drop is below ``CAUSAL_MARGIN`` has **no single cause** and is reported apart (a logit that
no single object carries: the scene's objects stand in for one another, or nothing in it matters).

For yes/no tokens P(yes) = softmax over the two answer tokens is kept too, with each object out and with every
cue object out at once (cue cases), which is how a hallucination is *verified* to be caused by its cue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from owlens.explain.targets import resolve_token
from owlens.results import FieldsResult
from owlens.toyworld.world import without

__all__ = ["CAUSAL_MARGIN", "CausalTruth", "causal_truth"]

# A raw-logit drop of 1 nat: P(token) falls by a factor of about e when the others stay put. Object cases drop
# by about 7 when their object goes, and a cue case's "yes" by more; 1 keeps out cases where removing any
# single object barely moves the logit.
CAUSAL_MARGIN = 1.0


@dataclass(frozen=True)
class CausalTruth(FieldsResult):
    """What removing each object of a scene does to the explained token.

    logit: the explained raw logit on the scene as drawn (re-encoded: equal to the scene's own).
    logit_without: (K,) that logit with object k taken out, K = the scene's objects in drawing order.
    cause: the index of the causal object (largest drop, at least ``margin``), or None: no single cause.
    p_yes, p_yes_without: for yes/no tokens, P(yes) on the scene and with each object out (else None).
    p_yes_without_cues: P(yes) with every cue object out at once (cue and control cases, else None).
    """

    logit: float
    logit_without: tuple[float, ...]
    cause: int | None
    margin: float
    p_yes: float | None = None
    p_yes_without: tuple[float, ...] | None = None
    p_yes_without_cues: float | None = None

    @property
    def drops(self) -> tuple[float, ...]:
        return tuple(self.logit - v for v in self.logit_without)


def _variants(case, cue_shape: str | None):
    scene = case.scene
    images = [scene.image] + [without(scene, [k]).image for k in range(len(scene.objects))]
    if cue_shape is not None:
        images.append(without(scene, [k for k, o in enumerate(scene.objects) if o.shape == cue_shape]).image)
    return images


def causal_truth(model, cases: Sequence, *, margin: float = CAUSAL_MARGIN) -> list[CausalTruth]:
    """The causal truth of every case (``saliency_cases.SaliencyCase``): one batch of variants per case.

    A case's variants share its prompt, so they batch without padding, and the result of a case does not depend
    on which other cases it is computed with (a resumed evaluation reproduces an uninterrupted one exactly).
    """
    return [_one(model, case, margin) for case in cases]


@torch.no_grad()
def _one(model, case, margin: float) -> CausalTruth:
    tokenizer = model.processor.mllm_tokenizer
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    token_id = resolve_token(tokenizer, case.token)[0]
    cue_shape = case.cue.split("→")[0] if case.cue else None
    images = _variants(case, cue_shape)
    embedding = model.encode_images(images)  # (1 + K [+ 1], 1+N, d)
    logits = model.last_logits(embedding, [case.prompt] * len(images)).float().cpu()  # (1 + K [+ 1], V)
    explained = logits[:, token_id].double().numpy()
    k = len(case.scene.objects)
    drops = explained[0] - explained[1:1 + k]
    cause = int(np.argmax(drops)) if k and drops.max() >= margin else None
    p_yes = p_without = p_cues = None
    if token_id in (yes, no):
        pairs = logits[:, [yes, no]].double().softmax(-1)[:, 0].numpy()
        p_yes, p_without = float(pairs[0]), tuple(float(p) for p in pairs[1:1 + k])
        p_cues = float(pairs[1 + k]) if cue_shape else None
    return CausalTruth(float(explained[0]), tuple(float(v) for v in explained[1:1 + k]), cause, margin, p_yes,
                       p_without, p_cues)
