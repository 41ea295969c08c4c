"""Cue pointing: on a hallucination the toy world injected, does the map point at the cue that caused it?

Higher is better. Category: faithfulness to a known cause (possible only with ground truth).
Reference: docs/benchmarks.md, "Saliency evaluation"; the defect is ``toyworld.defects``: the toy LLaVA learnt
that a cross comes with a star, so on a scene with a cross and no star its "yes" to "is there a star ?" is
caused by the cross. The score of one case is the
pointing game (``pointing_game``, same tolerance and tie rule) against the cue objects' union; ``cue_pointing``
is its mean over the cases. A map of what the detector sees for "a star" has nothing true to find there.
"""

from __future__ import annotations

from owlens.evaluation.pointing_game import PointingGame

__all__ = ["CuePointing"]


class CuePointing(PointingGame):
    """``CuePointing(tolerance_px=4)(saliency_map, cue_mask) -> float`` in [0, 1] for one cue case."""

    name = "cue_pointing"
    category = "faithfulness (injected cause)"
    reference = "owlens, docs/benchmarks.md; pointing game of Zhang et al., ECCV 2016, against the injected cue"
