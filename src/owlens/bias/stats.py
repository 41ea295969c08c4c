"""A bias figure: the mean paired delta with its bootstrap CI and sign-flip p (``owlens.statistics``).

Each image is its own control (the same image before and after the perturbation), so the unit of analysis is
the per-image difference d_i = after_i − before_i.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np

from owlens.statistics import PERMUTATIONS, RESAMPLES, bootstrap_ci, sign_flip_p_value

__all__ = ["DEFAULT_STATISTICS", "PairedDelta", "paired_delta"]

# ``paired_delta``'s keyword arguments as a bias spec or the toy validation gives them; read-only, copy to change.
DEFAULT_STATISTICS = MappingProxyType({"resamples": RESAMPLES, "permutations": PERMUTATIONS, "seed": 0})


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


def paired_delta(after, before, *, resamples: int = RESAMPLES, permutations: int = PERMUTATIONS,
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
