"""A per-object verdict on one answer: every object the MLLM names, grounded or not by the detector on the same E.

``check`` generates an answer through J, finds the objects it mentions (``ObjectVocabulary``), and asks OWL, from
the embedding the answer was generated from, for each object's presence p_c and best box (the paper's
hallucination check), one box per object (``claims.py``: two names on one box are one object). An object whose
p_c does not pass τ is ungrounded: a likely hallucination. A "yes" to a POPE question ("Is there a {c} in the
image?") names no object itself, so there the object asked about is the one checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from owlens.hallucination.answers import p_yes, parse_answer, yes_no_token_ids
from owlens.hallucination.calibration import Grounding, resolve_grounding
from owlens.hallucination.claims import claim_boxes
from owlens.hallucination.flag import PresenceThreshold
from owlens.hallucination.pope_format import object_of
from owlens.hallucination.vocabulary import ObjectVocabulary
from owlens.images import load_image
from owlens.models.postprocess import Box
from owlens.queries import QUERY_TEMPLATE

__all__ = ["ObjectVerdict", "CheckResult", "ground", "check", "claimed"]


@dataclass(frozen=True)
class ObjectVerdict:
    """One mentioned object, judged on the detector's best box for it that no other named object holds.

    name: the object as the vocabulary names it.
    detection: that best box, a ``Box`` as ``owlens detect`` reports one: its ``query`` (the name in the query
        template), ``score`` (p_c, read here as ``presence``), ``box_xyxy_px`` (pixels of the original image) and
        ``index`` (the patch that predicts it).
    presence_logit: z_c, the logit for the query on that box (the max over boxes, unless a more strongly detected
        object of the same answer holds the best box: ``claims.claim_boxes``); presence = sigmoid(presence_logit).
    grounded: presence_logit > τ with the detector alone; with a calibrated combined flag, its score for "yes,
        there is a {name}" (``flag_score``, from the MLLM's own ``p_yes`` and z_c) stays under the calibration's cut.
    p_yes, flag_score: None unless the combined flag judged.
    held_by: the named object that holds this one's own best box (then z_c is read on the next best), or None.
    """

    name: str
    detection: Box
    presence_logit: float
    grounded: bool
    p_yes: float | None = None
    flag_score: float | None = None
    held_by: str | None = None

    @property
    def query(self) -> str:
        return self.detection.query

    @property
    def presence(self) -> float:
        """p_c, the best box's score."""
        return self.detection.score

    @property
    def box_xyxy_px(self) -> tuple[float, float, float, float]:
        return self.detection.box_xyxy_px

    def to_dict(self) -> dict:
        """The flat keys ``owlens check --json`` and run.json have always written (the report reads them); the
        patch index is left out, as it was before the box was a ``Box``."""
        return {"name": self.name, "query": self.query, "presence": self.presence,
                "presence_logit": self.presence_logit, "box_xyxy_px": self.box_xyxy_px, "grounded": self.grounded,
                "p_yes": self.p_yes, "flag_score": self.flag_score, "held_by": self.held_by}


@dataclass(frozen=True)
class CheckResult:
    """The answer to ``prompt`` and a verdict for every object it mentions, in order of first mention.

    threshold: τ on p_c; threshold_source: "calibrated" (the model's calibration.json), "given" (by the
    caller) or "uncalibrated" (p_c = 0.5, a guess).
    """

    prompt: str
    answer: str
    objects: tuple[ObjectVerdict, ...]
    threshold: float
    threshold_source: str = "given"

    @property
    def ungrounded(self) -> list[str]:
        return [o.name for o in self.objects if not o.grounded]

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "objects": [o.to_dict() for o in self.objects],
                "ungrounded": self.ungrounded}


@torch.no_grad()
def ground(model, embedding: torch.Tensor, names: Sequence[str], image_size: tuple[int, int],
           threshold: PresenceThreshold | Grounding, query_template: str = QUERY_TEMPLATE) -> list[ObjectVerdict]:
    """E (1, 1+N, d) of an image of ``image_size`` (width, height) and object names → one verdict per name.

    ``threshold``: τ (the detector alone), or a ``Grounding`` (``calibration.resolve_grounding``).
    """
    if not names:
        return []
    grounding = threshold if isinstance(threshold, Grounding) else Grounding(threshold, "given")
    queries = [query_template.format(name) for name in names]
    detections = model.detect(embedding, queries)
    corners = detections.boxes_xyxy_px(image_size)[0]  # (N, 4)
    claims = claim_boxes(detections.logits[0].cpu(), corners.cpu())  # one box per named object
    best_logit, best = claims.logit, claims.index  # (Q,)
    boxes = corners[best]  # (Q, 4)
    z = best_logit.double().numpy()
    grounded, chance, scores = z > grounding.threshold.logit, [None] * len(names), [None] * len(names)
    if grounding.combined:
        # The MLLM asked about each named object, on the same E, as the calibration split asked it.
        prompts = [model.processor.chat(grounding.question_template.format(name)) for name in names]
        tokens = model.image_tokens(embedding).expand(len(names), -1, -1)
        chance = p_yes(model.logits_from_tokens(tokens, prompts)[:, -1],
                       *yes_no_token_ids(model.processor.mllm_tokenizer)).cpu().double().numpy()
        scores = grounding.flag.scores(np.ones(len(names), dtype=bool), z, chance)
        grounded = scores <= grounding.cut
        chance, scores = [float(v) for v in chance], [float(v) for v in scores]
    held_by = [names[h] if h >= 0 else None for h in claims.held_by.tolist()]
    return [ObjectVerdict(name, Box(query, float(torch.sigmoid(best_logit[q])), tuple(float(v) for v in boxes[q]),
                                    int(best[q])), float(best_logit[q]), bool(grounded[q]), chance[q], scores[q],
                          held_by[q])
            for q, (name, query) in enumerate(zip(names, queries))]


def claimed(question: str, answer: str, vocabulary: ObjectVocabulary) -> list[str]:
    """Objects the answer asserts: those it mentions, or the object of a presence question answered yes."""
    names = vocabulary.mentions(answer)
    try:
        asked = object_of(question)
    except ValueError:
        return names
    if parse_answer(answer) == "yes":
        names = [n for n in vocabulary.mentions(asked) or [asked] if n not in names] + names
    return names


@torch.no_grad()
def check(model, image, prompt: str, vocabulary: ObjectVocabulary, *,
          threshold: Grounding | PresenceThreshold | float | None = None, max_new_tokens: int = 64,
          query_template: str = QUERY_TEMPLATE) -> CheckResult:
    """Generate an answer about ``image`` (path, PIL or array) and ground every object it mentions.

    ``threshold``: a ``Grounding``, or τ on p_c (a ``PresenceThreshold`` or a probability: the detector
    alone); None reads the model's calibration (``calibration.resolve_grounding``: τ and the combined flag),
    and without one falls back to p_c = 0.5, saying once that the verdicts are uncalibrated.
    """
    if isinstance(threshold, PresenceThreshold):
        threshold = Grounding(threshold, "given")
    elif not isinstance(threshold, Grounding):
        threshold = resolve_grounding(model, threshold)
    picture = load_image(image)
    processor = model.processor
    full_prompt = prompt if processor.image_token in prompt else processor.chat(prompt)
    embedding = model.encode_images(picture)  # (1, 1+N, d)
    answer = model.generate(embedding, [full_prompt], max_new_tokens=max_new_tokens).texts[0]
    verdicts = ground(model, embedding, claimed(prompt, answer, vocabulary), picture.size, threshold, query_template)
    return CheckResult(full_prompt, answer, tuple(verdicts), threshold.threshold.probability, threshold.source)
