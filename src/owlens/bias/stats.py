"""Paired statistics for a bias figure: mean paired delta, bootstrap CI, sign-flip permutation test.

Each image is its own control (the same image before and after the perturbation), so the unit of analysis is
the per-image difference d_i = after_i − before_i. No scipy: numpy only, every resampling seeded.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedDelta", "bootstrap_ci", "paired_delta", "sign_flip_p_value"]

EXACT_UP_TO = 16  # enumerate all 2^n sign flips up to this many pairs (65,536), sample beyond


@dataclass(frozen=True)
class PairedDelta:
    """Mean of after − before over the pairs where both are known.

    delta: mean paired difference (positive: the perturbation raised the score).
    ci95: percentile bootstrap 95% interval of the mean (lo, hi); NaN with fewer than 2 pairs.
    p_value: two-sided sign-flip permutation test of "the differences are symmetric about 0".
    n: pairs used; n_missing: pairs dropped because either side is unknown (an unparseable answer).
    """

    delta: float
    ci95: tuple[float, float]
    p_value: float
    n: int
    n_missing: int = 0

    def contains(self, value: float = 0.0) -> bool:
        """Whether the interval holds ``value`` (ends included)."""
        return self.ci95[0] <= value <= self.ci95[1]

    def to_dict(self) -> dict:
        """JSON-ready; NaN (no pairs) becomes None, since JSON has no NaN."""
        out = asdict(self)
        out["ci95"] = [_finite(v) for v in self.ci95]
        out["delta"], out["p_value"] = _finite(self.delta), _finite(self.p_value)
        return out


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def bootstrap_ci(values: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,), seeded; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        # Every resample of one value is that value: a zero-width interval that would read as certainty.
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def sign_flip_p_value(differences: np.ndarray, *, permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided p of the paired permutation test: how often random sign flips give |mean| ≥ the observed.

    Exact (all 2^n flips) for n ≤ 16; otherwise Monte Carlo with the (b + 1) / (m + 1) estimate, never 0.
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


def paired_delta(after, before, *, resamples: int = 2000, permutations: int = 10000,
                 seed: int = 0) -> PairedDelta:
    """``PairedDelta`` of two equally long sequences; ``None`` or NaN on either side drops that pair."""
    after, before = list(after), list(before)
    if len(after) != len(before):
        raise ValueError(f"paired scores need equal lengths; received {len(after)} after and {len(before)} before")
    both = [(a, b) for a, b in zip(after, before)
            if a is not None and b is not None and not (np.isnan(a) or np.isnan(b))]
    d = np.array([a - b for a, b in both], dtype=np.float64)
    return PairedDelta(delta=float(d.mean()) if d.size else float("nan"),
                       ci95=bootstrap_ci(d, resamples=resamples, seed=seed),
                       p_value=sign_flip_p_value(d, permutations=permutations, seed=seed),
                       n=int(d.size), n_missing=len(after) - int(d.size))
