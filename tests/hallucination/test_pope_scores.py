"""AUROC and AP against hand-computed values and brute-force definitions, ties included (scikit-learn's rules)."""

import itertools
import math

import numpy as np
import pytest

from owlens.hallucination.scores import auroc, average_precision


def brute_auroc(scores, targets):
    """P(score of a positive > score of a negative) + ½ P(tie), over all pairs."""
    pos = [s for s, t in zip(scores, targets) if t]
    neg = [s for s, t in zip(scores, targets) if not t]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_ap(scores, targets):
    """Σ over distinct thresholds t (descending) of (R(t) − R(previous t)) · P(t), predictions = score ≥ t."""
    total, previous_recall, positives = 0.0, 0.0, sum(targets)
    for t in sorted(set(scores), reverse=True):
        chosen = [y for s, y in zip(scores, targets) if s >= t]
        recall = sum(chosen) / positives
        total += (recall - previous_recall) * sum(chosen) / len(chosen)
        previous_recall = recall
    return total


@pytest.mark.parametrize("scores, targets, expected_auroc, expected_ap", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75, (1 + 2 / 3) / 2),  # scikit-learn's documented example
    ([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1], 0.75, 0.75),  # ties: ½ per tied pair; AP 0.5·1 + 0.5·0.5
    ([1, 2, 3, 4], [0, 0, 1, 1], 1.0, 1.0),
    ([4, 3, 2, 1], [0, 0, 1, 1], 0.0, 0.5 * (1 / 3) + 0.5 * (2 / 4)),  # recall steps at ranks 3 and 4
    ([0.2, 0.2, 0.2, 0.2], [0, 1, 0, 1], 0.5, 0.5),
    ([-math.inf, 0.0, math.inf, math.inf], [0, 1, 1, 0], 0.625, 0.5 * 0.5 + 0.5 * (2 / 3)),
])
def test_hand_computed(scores, targets, expected_auroc, expected_ap):
    assert auroc(scores, targets) == pytest.approx(expected_auroc)
    assert average_precision(scores, targets) == pytest.approx(expected_ap)


def test_brute_force_on_random_data_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 5, n).astype(float)  # few distinct values: ties everywhere
        targets = rng.random(n) < 0.4
        if targets.all() or not targets.any():
            continue
        assert auroc(scores, targets) == pytest.approx(brute_auroc(scores.tolist(), targets.tolist()))
        assert average_precision(scores, targets) == pytest.approx(brute_ap(scores.tolist(), targets.tolist()))


def test_single_class_and_bad_inputs():
    assert math.isnan(auroc([0.1, 0.2], [1, 1])) and math.isnan(auroc([0.1, 0.2], [0, 0]))
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))
    assert average_precision([0.1, 0.2], [1, 1]) == 1.0
    with pytest.raises(ValueError, match="one score per target"):
        auroc([0.1], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([float("nan"), 0.1], [0, 1])
