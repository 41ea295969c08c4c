"""POPE's metrics, and the two ranking metrics used to judge a hallucination score.

``pope_scores`` computes accuracy, precision, recall, F1 and yes-ratio exactly as POPE's reference evaluation
(RUCAIBox/POPE evaluate.py) does, "yes" being the positive class. Where the reference divides by zero (no
"yes" answer, or no "yes" label) it crashes; here the ratio is 0, scikit-learn's ``zero_division=0``.

``auroc`` and ``average_precision`` follow scikit-learn's ``roc_auc_score`` and ``average_precision_score``,
tied scores included: AUROC is the Mann-Whitney probability with a tie counted one half (the trapezoids of
the ROC curve), and AP is Σ (R_k − R_{k−1}) P_k over the distinct score thresholds, without interpolation.
Both are higher-is-better; AUROC is NaN when the targets hold a single class (scikit-learn raises there) and
AP is NaN without a positive target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from owlens.results import FieldsResult
from owlens.statistics import RESAMPLES, percentile_interval

__all__ = ["PopeScores", "pope_scores", "auroc", "average_precision", "paired_auroc_difference"]


@dataclass(frozen=True)
class PopeScores(FieldsResult):
    """POPE's five figures (higher is better, but for yes_ratio, which a balanced model keeps near 0.5)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    tp: int
    fp: int
    tn: int
    fn: int


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def pope_scores(predictions: Sequence[str], labels: Sequence[str]) -> PopeScores:
    """Parsed answers ("yes"/"no", see ``answers.parse_answer``) against labels, pair by pair.

    As in the reference, anything but "no" counts as yes, for predictions and labels alike.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"expected one label per answer; received {len(predictions)} answers and "
                         f"{len(labels)} labels")
    if not predictions:
        raise ValueError("no answers to score")
    said_yes = np.array([p != "no" for p in predictions])
    is_yes = np.array([label != "no" for label in labels])
    tp, fp = int((said_yes & is_yes).sum()), int((said_yes & ~is_yes).sum())
    tn, fn = int((~said_yes & ~is_yes).sum()), int((~said_yes & is_yes).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return PopeScores(accuracy=_ratio(tp + tn, len(predictions)), precision=precision, recall=recall,
                      f1=_ratio(2 * precision * recall, precision + recall),
                      yes_ratio=_ratio(tp + fp, len(predictions)), tp=tp, fp=fp, tn=tn, fn=fn)


def _checked(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets).ravel().astype(bool)
    if scores.shape != targets.shape:
        raise ValueError(f"expected one score per target; received {scores.size} scores and {targets.size} targets")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN: expected finite numbers")
    return scores, targets


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1]
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auroc(scores, targets) -> float:
    """Area under the ROC curve of ``scores`` (higher = more positive) for boolean ``targets``."""
    scores, targets = _checked(scores, targets)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = _average_ranks(scores)[targets].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(scores, targets) -> float:
    """Average precision of ``scores`` for boolean ``targets`` (step-wise, scikit-learn's definition)."""
    scores, targets = _checked(scores, targets)
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, targets = scores[order], targets[order]
    last_of_tie = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1]  # one threshold per distinct score
    true_positives = np.cumsum(targets)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def paired_auroc_difference(scores_a, scores_b, targets, *, resamples: int = RESAMPLES, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float, float]:
    """AUROC(a) − AUROC(b) on the same targets: (the difference on all items, and its percentile bootstrap
    interval), resampling items with replacement and scoring both on each resample (paired). Resamples that
    hold a single class are skipped."""
    a, targets = _checked(scores_a, targets)
    b, _ = _checked(scores_b, targets)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        pick = rng.integers(0, targets.size, targets.size)
        if targets[pick].all() or not targets[pick].any():
            continue
        differences.append(auroc(a[pick], targets[pick]) - auroc(b[pick], targets[pick]))
    if not differences:
        return float("nan"), float("nan"), float("nan")
    return auroc(a, targets) - auroc(b, targets), *percentile_interval(differences, level)
