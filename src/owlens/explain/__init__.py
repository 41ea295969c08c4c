"""Explainers of J's outputs: one method per file, one verb, ``explain(inputs, target=...) -> Saliency``.

``GradientAlignment`` is the paper's; ``ObjectAttribution`` names the objects a token rests on; the baselines
(gradient, gradient×input, attention, rollout, detection-only, random) share the same interface, and
``make_explainer(name, model)`` builds any of them by its name in ``METHODS``.
"""

from owlens.explain.attention import Attention
from owlens.explain.detection_only import DetectionOnly
from owlens.explain.ga import GradientAlignment
from owlens.explain.gradient import Gradient
from owlens.explain.gradient_input import GradientInput
from owlens.explain.inputs import ExplainInputs
from owlens.explain.object_attribution import ObjectAttribution
from owlens.explain.random_map import RandomMap
from owlens.explain.registry import METHODS, make_explainer
from owlens.explain.rollout import AttentionRollout
from owlens.explain.saliency import Saliency
from owlens.explain.targets import AnswerTarget, TokenTarget
from owlens.queries import QUERY_TEMPLATE

__all__ = ["METHODS", "QUERY_TEMPLATE", "AnswerTarget", "Attention", "AttentionRollout", "DetectionOnly",
           "ExplainInputs", "Gradient", "GradientAlignment", "GradientInput", "ObjectAttribution", "RandomMap",
           "Saliency", "TokenTarget", "make_explainer"]
