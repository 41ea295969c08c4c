"""The hallucination flag: the MLLM's yes/no disagrees with the detector reading the same E (docs/design.md §4).

Both branches of J read one embedding E, so a "yes" that OWL's presence score p_c cannot back (or a "no"
while OWL sees the object) is suspect. The detector's threshold τ is chosen on a calibration split — the
threshold that best separates present from absent objects there — and never on the split being scored.

The continuous flag score is the signed margin of the detector's presence logit z_c = logit(p_c) beyond τ,
pointing against the MLLM's answer: τ − z_c after a "yes", z_c − τ after a "no". It is positive when the flag
is raised (zero at a tie z_c = τ, which counts as absent), so thresholding the score at 0 is the flag; working
in logits keeps the ranking where the sigmoid saturates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from owlens.results import FieldsResult

__all__ = ["PresenceThreshold", "calibrate_threshold", "flag_scores", "flags"]


@dataclass(frozen=True)
class PresenceThreshold(FieldsResult):
    """τ on the presence logit (``logit``) and as a probability (``probability`` = sigmoid(logit)).

    ``calibration_accuracy``: accuracy of "present ⇔ z_c > τ" on the ``n_calibration`` calibration questions.
    """

    logit: float
    probability: float
    calibration_accuracy: float
    n_calibration: int


    @classmethod
    def from_probability(cls, probability: float) -> PresenceThreshold:
        """A fixed, uncalibrated τ (``n_calibration`` = 0)."""
        if not 0.0 < probability < 1.0:
            raise ValueError(f"expected a threshold strictly between 0 and 1; received {probability}")
        return cls(math.log(probability / (1.0 - probability)), probability, float("nan"), 0)


def calibrate_threshold(presence_logits, labels) -> PresenceThreshold:
    """The τ that maximises the accuracy of "present ⇔ z_c > τ" against ``labels`` ("yes"/"no" or bool).

    Candidates are the midpoints between consecutive distinct logits (and one beyond each end); the first
    best one is kept. Call it on a calibration split only.
    """
    logits = np.asarray(presence_logits, dtype=np.float64).ravel()
    truth = np.array([label is True or label == "yes" for label in labels])
    if logits.size != truth.size or logits.size == 0:
        raise ValueError(f"expected one label per presence logit, at least one; received {logits.size} logits and "
                         f"{truth.size} labels")
    order = np.argsort(logits, kind="mergesort")
    values, present = logits[order], truth[order]
    # Candidate i says "present" for sorted positions ≥ i; only boundaries between distinct values count.
    cuts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1, values.size]
    absent_below = np.r_[0, np.cumsum(~present)][cuts]
    present_above = truth.sum() - np.r_[0, np.cumsum(present)][cuts]
    accuracy = (absent_below + present_above) / values.size
    best = int(np.argmax(accuracy))
    i = cuts[best]
    tau = values[0] - 1.0 if i == 0 else values[-1] + 1.0 if i == values.size else (values[i - 1] + values[i]) / 2
    return PresenceThreshold(float(tau), 1.0 / (1.0 + math.exp(-tau)), float(accuracy[best]), int(values.size))


def flag_scores(said_yes, presence_logits, threshold: PresenceThreshold) -> np.ndarray:
    """(Q,) signed disagreement margin: τ − z_c after a "yes", z_c − τ after a "no" (> 0 ⇔ flagged)."""
    said_yes = np.asarray(said_yes, dtype=bool)
    margin = np.asarray(presence_logits, dtype=np.float64) - threshold.logit
    return np.where(said_yes, -margin, margin)


def flags(said_yes, presence_logits, threshold: PresenceThreshold) -> np.ndarray:
    """(Q,) bool: the answer says yes and the detector no (z_c ≤ τ), or the other way round."""
    present = np.asarray(presence_logits, dtype=np.float64) > threshold.logit
    return np.asarray(said_yes, dtype=bool) != present
