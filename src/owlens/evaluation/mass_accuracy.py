"""Relevance mass accuracy: the share of the map's positive relevance that lies on the object. Higher is better.

Category: localisation. Reference: Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground truth
evaluation of neural network explanations", Information Fusion 81, 2022: mass accuracy = R_within / R_total,
computed on the positive relevance only (negative relevance is set to zero first, as there).

A map with no positive relevance ranks nothing: it is scored as a constant map, i.e. the share of the image
that the region covers (the same as any constant map, and what a random guess earns on average).
"""

from __future__ import annotations

import numpy as np

from owlens.evaluation._checks import as_map, as_region

__all__ = ["MassAccuracy"]


class MassAccuracy:
    """``MassAccuracy()(saliency_map, truth) -> float`` in [0, 1]; truth: mask (H, W), box (4,) or boxes (K, 4)."""

    name = "mass_accuracy"
    higher_is_better = True
    category = "localisation"
    reference = "Arras et al., CLEVR-XAI, Information Fusion 2022"

    def __call__(self, saliency_map, truth) -> float:
        values = np.clip(as_map(saliency_map), 0.0, None)
        region = as_region(truth, values.shape)
        total = values.sum()
        if total <= 0:
            return float(region.mean())
        return float(values[region].sum() / total)
