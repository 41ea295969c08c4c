"""A per-object verdict on one answer: every object the MLLM names, grounded or not by the detector on the same E.

``check`` generates an answer through J, finds the objects it mentions (``ObjectVocabulary``), and asks
OWL, from the embedding the answer was generated from, for each object's presence p_c and best box
(DESIGN.md §4). An object whose p_c does not pass τ is ungrounded: a likely hallucination. A "yes" to a POPE
question ("Is there a {c} in the image?") names no object itself, so there the object asked about is the one
checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from owlens.hallucination.answers import parse_answer
from owlens.hallucination.flag import PresenceThreshold
from owlens.hallucination.pope_format import QUERY_TEMPLATE, object_of
from owlens.hallucination.vocabulary import ObjectVocabulary
from owlens.images import load_image

__all__ = ["ObjectVerdict", "CheckResult", "ground", "check", "claimed"]


@dataclass(frozen=True)
class ObjectVerdict:
    """One mentioned object. ``presence`` = sigmoid(``presence_logit``), the max over boxes for ``query``;
    ``box_xyxy_px`` is that best box in pixels of the original image; ``grounded`` ⇔ presence_logit > τ."""

    name: str
    query: str
    presence: float
    presence_logit: float
    box_xyxy_px: tuple[float, float, float, float]
    grounded: bool

    def to_dict(self) -> dict:
        return asdict(self)


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
                "threshold_source": self.threshold_source, "objects": [o.to_dict() for o in self.objects], "ungrounded": self.ungrounded}


@torch.no_grad()
def ground(model, embedding: torch.Tensor, names: Sequence[str], size: tuple[int, int],
           threshold: PresenceThreshold, query_template: str = QUERY_TEMPLATE) -> list[ObjectVerdict]:
    """E (1, 1+N, d) of an image of ``size`` (width, height) and object names → one verdict per name."""
    if not names:
        return []
    queries = [query_template.format(name) for name in names]
    detections = model.detect(embedding, queries)
    logits = detections.logits.float()[0]  # (N, Q)
    best_logit, best = logits.max(dim=0)  # (Q,)
    boxes = detections.boxes_xyxy_px(*size)[0, best]  # (Q, 4)
    return [ObjectVerdict(name, query, float(torch.sigmoid(best_logit[q])), float(best_logit[q]),
                          tuple(float(v) for v in boxes[q]), bool(best_logit[q] > threshold.logit))
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
          threshold: PresenceThreshold | float | None = None, max_new_tokens: int = 64,
          query_template: str = QUERY_TEMPLATE) -> CheckResult:
    """Generate an answer about ``image`` (path, PIL or array) and ground every object it mentions.

    ``threshold``: τ on p_c (a ``PresenceThreshold`` or a probability); None reads the model's calibration (``calibration.resolve_threshold``), and
    without one falls back to p_c = 0.5, saying once that the verdicts are uncalibrated.
    """
    from owlens.hallucination.calibration import resolve_threshold

    source = "given"
    if not isinstance(threshold, PresenceThreshold):
        threshold, source = resolve_threshold(model, threshold)
    picture = load_image(image)
    processor = model.processor
    full_prompt = prompt if processor.image_token in prompt else processor.chat(prompt)
    embedding = model.encode_images(picture)  # (1, 1+N, d)
    answer = model.generate(embedding, [full_prompt], max_new_tokens=max_new_tokens).texts[0]
    verdicts = ground(model, embedding, claimed(prompt, answer, vocabulary), picture.size, threshold, query_template)
    return CheckResult(full_prompt, answer, tuple(verdicts), threshold.probability, source)
