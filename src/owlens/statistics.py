"""The resampling statistics every figure uses: percentile bootstrap of a mean, and the sign-flip paired test.

One default each (``RESAMPLES``, ``PERMUTATIONS``), so that intervals from the bias, saliency, hallucination
and toy-world measures are read at the same Monte Carlo precision. No scipy: numpy only, every resampling seeded.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["EXACT_UP_TO", "PERMUTATIONS", "RESAMPLES", "bootstrap_ci", "bootstrap_means", "percentile_interval",
           "sign_flip_p_value"]

RESAMPLES = 2000
PERMUTATIONS = 10000
EXACT_UP_TO = 16  # enumerate all 2^n sign flips up to this many pairs (65,536), sample beyond


def bootstrap_means(values, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means (resamples,) of ``values`` (n,) resampled with replacement, n ≥ 1, from ``default_rng(seed)``."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, values.size, size=(resamples, values.size))].mean(1)


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``samples``: their (1 − level)/2 and (1 + level)/2 quantiles."""
    alpha = (1.0 - level) / 2
    return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def bootstrap_ci(values, *, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,), seeded; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        # Every resample of one value is that value: a zero-width interval that would read as certainty.
        return float("nan"), float("nan")
    return percentile_interval(bootstrap_means(values, resamples=resamples, seed=seed), level)


def sign_flip_p_value(differences, *, permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p of the paired permutation test: how often random sign flips give |mean| ≥ the observed.

    Exact (all 2^n flips) for n ≤ ``EXACT_UP_TO``; otherwise Monte Carlo with the (b + 1) / (m + 1) estimate,
    never 0.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return float("nan")
    observed = abs(d.mean()) - 1e-12 * max(1.0, abs(d).max())  # tolerance: ties count as "as extreme"
    if d.size <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))  # (2^n, n)
        return float((np.abs(signs @ d / d.size) >= observed).mean())
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(permutations, d.size)) * 2.0 - 1.0
    extreme = int((np.abs(signs @ d / d.size) >= observed).sum())
    return (extreme + 1) / (permutations + 1)
