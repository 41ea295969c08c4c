"""Causal pointing: does the map's maximum fall on the object the explained logit causally depends on?

Higher is better. Category: faithfulness to a verified cause (needs scenes that can be re-rendered: the toy
world). The causal object of a case is the one whose removal from the scene lowers the explained raw logit most
(``evaluation.causal``); the score of one case is the pointing game against that object's mask, with the same
tolerance and tie rule (``pointing_game``). Cases without a single cause are not scored. Unlike the pointing
game against the object a token *names*, this holds a map to what the MLLM's output depends on: on an injected
hallucination ("yes, there is a triangle" on a triangle-less scene) the truth is the cue object that drives the
"yes", which a map of what the detector sees for "a triangle" has no reason to find.
Reference: the pointing game of Zhang et al., ECCV 2016, scored against re-rendering interventions as causal
ground truth (in the spirit of Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, which asks maps
to depend on what the model depends on).
"""

from __future__ import annotations

from owlens.evaluation.pointing_game import PointingGame

__all__ = ["CausalPointing"]


class CausalPointing(PointingGame):
    """``CausalPointing(tolerance_px=4)(saliency_map, causal_object_mask) -> float`` in [0, 1] for one case."""

    name = "causal_pointing"
    category = "faithfulness (verified cause)"
    reference = "Zhang et al., ECCV 2016 (pointing game), against re-rendered causal truth"
