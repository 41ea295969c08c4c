"""Relevance rank accuracy: of the K most relevant pixels (K = the region's size), the share on the object.

Higher is better. Category: localisation. Reference: Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 81,
2022: rank accuracy = |P_top-K ∩ GT| / |GT|.

Ties at the K-th value (flat maps painted from boxes or patches have many): the pixels strictly above it count
in full, and the tied group fills the remaining places in proportion to how many of its pixels lie on the
object, the expected score of a uniformly random order among equal values. A constant map scores the share of
the image that the region covers.
"""

from __future__ import annotations

import numpy as np

from owlens.evaluation._checks import as_map, as_region

__all__ = ["RankAccuracy"]


class RankAccuracy:
    """``RankAccuracy()(saliency_map, truth) -> float`` in [0, 1]; truth: mask (H, W), box (4,) or boxes (K, 4)."""

    name = "rank_accuracy"
    higher_is_better = True
    category = "localisation"
    reference = "Arras et al., CLEVR-XAI, Information Fusion 2022"

    def __call__(self, saliency_map, truth) -> float:
        values = as_map(saliency_map)
        region = as_region(truth, values.shape)
        size = int(region.sum())
        kth = np.sort(values, axis=None)[::-1][size - 1]  # the K-th largest value
        above, tied = values > kth, values == kth
        places = size - int(above.sum())  # left for the tied group, 1..|tied|
        hits = (above & region).sum() + places * (tied & region).sum() / tied.sum()
        return float(hits / size)
