"""A hallucination flag that reads both branches: a tiny logistic regression on the detector and the MLLM.

The disagreement flag (``flag.py``) uses the detector's presence only relative to the answer; the MLLM's own
confidence P(yes) is left out, yet the MLLM's errors are often the answers it is unsure of. This model puts
both in one score, P(the answer is wrong | features), with features that let the detector's evidence count
differently after a "yes" and after a "no":

    a            the answer (1: yes, 0: no)
    a·z, (1−a)·z z = z_c, the detector's presence logit for the object asked about, clipped to ±CLIP
    a·q, (1−a)·q q = logit P(yes), the MLLM's own margin, clipped to ±CLIP

Fitted by Newton's method (IRLS) with a small ridge on standardised features, numpy only, on a calibration
split and never on the split it is scored on. The coefficients are written out (``to_dict``) so a user can
read what the flag weighs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CLIP", "FEATURES", "CombinedFlag", "features", "fit_combined_flag"]

FEATURES = ("answer_yes", "yes_times_presence_logit", "no_times_presence_logit", "yes_times_p_yes_logit",
            "no_times_p_yes_logit")
CLIP = 12.0  # logits beyond this carry no more evidence, and would let a few saturated rows dominate the fit


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def features(said_yes, presence_logits, p_yes) -> np.ndarray:
    """(Q, len(FEATURES)) float64 features of Q answered questions (answer, z_c, P(yes))."""
    a = np.asarray(said_yes, dtype=np.float64).ravel()
    z = np.clip(np.asarray(presence_logits, dtype=np.float64).ravel(), -CLIP, CLIP)
    q = np.clip(_logit(p_yes).ravel(), -CLIP, CLIP)
    if not a.size == z.size == q.size:
        raise ValueError(f"expected one answer, presence logit and P(yes) per question; received {a.size}, "
                         f"{z.size} and {q.size}")
    return np.stack([a, a * z, (1 - a) * z, a * q, (1 - a) * q], axis=1)


@dataclass(frozen=True)
class CombinedFlag:
    """score = intercept + Σ coefficient_k · (x_k − mean_k) / scale_k, the log-odds that the answer is wrong.

    ``n_calibration`` / ``n_wrong``: the questions it was fitted on and how many answers there were wrong.
    """

    coefficients: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    ridge: float
    n_calibration: int
    n_wrong: int
    features: tuple[str, ...] = FEATURES

    def __post_init__(self):
        sizes = {len(self.features), len(self.coefficients), len(self.mean), len(self.scale)}
        if len(sizes) != 1:
            raise ValueError(f"expected one coefficient, mean and scale per feature {self.features}; received "
                             f"{len(self.coefficients)}, {len(self.mean)} and {len(self.scale)}")
        if tuple(self.features) != FEATURES:
            raise ValueError(f"expected the features {FEATURES}; received {tuple(self.features)}")

    def scores(self, said_yes, presence_logits, p_yes) -> np.ndarray:
        """(Q,) log-odds that each answer is wrong (> 0 ⇔ flagged)."""
        x = (features(said_yes, presence_logits, p_yes) - np.asarray(self.mean)) / np.asarray(self.scale)
        return x @ np.asarray(self.coefficients) + self.intercept

    def flags(self, said_yes, presence_logits, p_yes) -> np.ndarray:
        """(Q,) bool: P(wrong) > ½."""
        return self.scores(said_yes, presence_logits, p_yes) > 0

    def to_dict(self) -> dict:
        return {"features": list(self.features), "coefficients": list(self.coefficients),
                "intercept": self.intercept, "mean": list(self.mean), "scale": list(self.scale),
                "ridge": self.ridge, "n_calibration": self.n_calibration, "n_wrong": self.n_wrong}

    @classmethod
    def from_dict(cls, payload: dict) -> CombinedFlag:
        try:
            return cls(tuple(float(v) for v in payload["coefficients"]), float(payload["intercept"]),
                       tuple(float(v) for v in payload["mean"]), tuple(float(v) for v in payload["scale"]),
                       float(payload["ridge"]), int(payload["n_calibration"]), int(payload["n_wrong"]),
                       tuple(payload["features"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"expected a combined flag with features, coefficients, intercept, mean, scale, ridge, "
                             f"n_calibration and n_wrong; received "
                             f"{sorted(payload) if isinstance(payload, dict) else payload!r}"
                             ) from err


def fit_combined_flag(said_yes, presence_logits, p_yes, wrong, *, ridge: float = 1e-2,
                      iterations: int = 50) -> CombinedFlag:
    """Logistic regression of ``wrong`` on ``features(...)``, L2 penalty ``ridge`` on the coefficients only.

    Newton steps on the penalised log-likelihood; the ridge keeps the fit finite when a split is separable.
    """
    x = features(said_yes, presence_logits, p_yes)
    y = np.asarray(wrong, dtype=np.float64).ravel()
    if y.size != x.shape[0]:
        raise ValueError(f"expected one 'wrong' label per question; received {y.size} labels for {x.shape[0]} "
                         "questions")
    if not 0 < y.sum() < y.size:
        raise ValueError(f"the calibration split needs wrong and right answers to fit the flag; received "
                         f"{int(y.sum())} wrong of {y.size}")
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0  # a constant feature (every answer "yes") stays a zero column after centring
    design = np.c_[np.ones(len(x)), (x - mean) / scale]
    penalty = np.full(design.shape[1], ridge * len(x))
    penalty[0] = 0.0  # the intercept is not shrunk
    w = np.zeros(design.shape[1])
    w[0] = math.log(y.mean() / (1 - y.mean()))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return CombinedFlag(tuple(float(v) for v in w[1:]), float(w[0]), tuple(float(v) for v in mean),
                        tuple(float(v) for v in scale), float(ridge), int(y.size), int(y.sum()))
