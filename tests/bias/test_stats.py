"""Paired statistics against hand-computed cases."""

import numpy as np
import pytest

from owlens.bias.stats import paired_delta
from owlens.statistics import bootstrap_ci, sign_flip_p_value


def test_exact_sign_flip_test_by_hand():
    # d = (1, 2, 3): of the 8 sign patterns only +++ and --- reach |sum| = 6.
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert sign_flip_p_value([1.0, -1.0]) == 1.0


def test_monte_carlo_sign_flip_is_seeded_and_never_zero():
    d = np.linspace(0.5, 1.5, 40)
    p = sign_flip_p_value(d, permutations=999, seed=3)
    assert p == pytest.approx(1 / 1000) and p == sign_flip_p_value(d, permutations=999, seed=3)
    noise = np.random.default_rng(0).normal(size=40)
    assert sign_flip_p_value(noise, permutations=999) > 0.05


def test_bootstrap_ci_of_a_constant_is_the_constant_and_is_seeded():
    assert bootstrap_ci(np.full(10, 2.5)) == (2.5, 2.5)
    values = np.random.default_rng(1).normal(1.0, 1.0, 50)
    lo, hi = bootstrap_ci(values, seed=4)
    assert lo < values.mean() < hi and (lo, hi) == bootstrap_ci(values, seed=4)
    assert hi - lo == pytest.approx(2 * 1.96 * values.std() / np.sqrt(50), rel=0.25)


def test_paired_delta_drops_and_counts_unknown_pairs():
    result = paired_delta([5, None, 7, 9.0], [4, 3, None, 8.0], resamples=200)
    assert result.delta == 1.0 and result.n == 2 and result.n_missing == 2
    assert result.ci95 == (1.0, 1.0) and result.contains(1.0) and not result.contains(0.0)


def test_one_pair_has_no_ci():
    # Every resample of one pair is that pair: its bootstrap interval would have zero width, not certainty.
    assert all(np.isnan(bootstrap_ci(np.array([3.0]))))
    result = paired_delta([5.0], [4.0], resamples=200)
    assert result.delta == 1.0 and result.n == 1 and result.to_dict()["ci95"] == [None, None]


def test_no_pairs_is_nan_and_json_null():
    result = paired_delta([None], [1])
    assert result.n == 0 and np.isnan(result.delta)
    assert result.to_dict() == {"delta": None, "ci95": [None, None], "p_value": None, "n": 0, "n_missing": 1}


def test_lengths_must_match():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_delta([1, 2], [1])
