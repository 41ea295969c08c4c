"""Explainers of J's outputs: one method per file, one verb, ``explain(inputs, target=...) -> Saliency``."""

from owlens.explain.ga import GradientAlignment
from owlens.explain.inputs import ExplainInputs
from owlens.explain.saliency import Saliency
from owlens.explain.targets import AnswerTarget, TokenTarget

__all__ = ["AnswerTarget", "ExplainInputs", "GradientAlignment", "Saliency", "TokenTarget"]
