"""Every explainer by name, for the CLI and the benchmark: ``make_explainer("rollout", model)``."""

from __future__ import annotations

from owlens.explain.attention import Attention
from owlens.explain.detection_only import DetectionOnly
from owlens.explain.ga import GradientAlignment
from owlens.explain.gradient import Gradient
from owlens.explain.gradient_input import GradientInput
from owlens.explain.object_attribution import ObjectAttribution
from owlens.explain.random_map import RandomMap
from owlens.explain.rollout import AttentionRollout

__all__ = ["METHODS", "make_explainer"]

# GA first: it is the paper's method, the others are read against it.
METHODS: dict[str, type] = {
    "ga": GradientAlignment,
    "object_attribution": ObjectAttribution,
    "gradient": Gradient,
    "gradient_input": GradientInput,
    "attention": Attention,
    "rollout": AttentionRollout,
    "detection_only": DetectionOnly,
    "random": RandomMap,
}


def make_explainer(name: str, model, **options):
    """An explainer by its name in ``METHODS``; ``options`` go to its constructor (e.g. ``seed=`` for random)."""
    if name not in METHODS:
        raise ValueError(f"unknown explanation method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name](model, **options)
