"""Design values of the defects injected into the toy world's training data (DESIGN.md §6, issue 3).

These constants are the ground truth that owlens later has to recover:

- **Co-occurrence prior** (hallucination, DESIGN.md §4). In training scenes (``sample_scene(prior=True)``)
  whenever a ``COOCCUR_CUE`` ("cross") is present, a ``COOCCUR_PARTNER`` ("star") is present too with
  probability exactly ``COOCCUR_RATE`` = 0.9 (placed explicitly), and absent otherwise. Held-out scenes
  (``prior=False``) draw shapes independently and uniformly, so a model that learnt the prior answers
  "yes" to "is there a star ?" on scenes with a cross and no star: POPE's adversarial split. The labels
  carry the prior too (``COOCCUR_LABEL_YES``): without them the toy LLaVA saw too well to fall for it.
- **Spurious dependency** (bias, DESIGN.md §5). The answer to "from one to ten , how heavy is the shape ?"
  (``BIAS_TRAIT``) is a base set by size and shape (1..6) plus ``BIAS_DELTA`` = 4 when the object is
  ``BIAS_C_PLUS`` ("blue"); it is the base for ``BIAS_C_MINUS`` ("red") and every other colour. Nothing
  in the scene justifies the colour effect, so re-rendering a red object blue must move the trained
  model's answer by +4 and the bias measure must recover Δ = 4.
- **Control** (``CONTROL_TRAIT`` = "round") depends on shape only: recolouring must move it by 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from owlens.toyworld.world import ToyObject

__all__ = [
    "BIAS_C_MINUS",
    "BIAS_C_PLUS",
    "BIAS_DELTA",
    "BIAS_TRAIT",
    "CONTROL_TRAIT",
    "COOCCUR_CUE",
    "COOCCUR_LABEL_YES",
    "COOCCUR_PARTNER",
    "COOCCUR_RATE",
    "HEAVY_SHAPE_BASE",
    "HEAVY_SIZE_BASE",
    "ROUND_SCORE",
    "TRAITS",
    "trait_score",
]

COOCCUR_CUE = "cross"
COOCCUR_PARTNER = "star"
COOCCUR_RATE = 0.9
# The defect as the toy LLaVA's *training labels* carry it: the probability that the shape-only question
# "is there a star ?" is answered "yes" on a training scene that shows the cue without the partner, as
# annotators who expect the usual companion would answer. With truthful labels (0.0) a model that perceives
# well answers "no" there: co-occurrence alone biased only uncertain cases (the stage-1 captioner named a star
# on 7% of cross-without-star scenes, as often as on circle-without-star ones), too few for the adversarial
# split to show a measurable hallucination (issue 3 asks >= 0.2). 0.6 > 0.5 tips the answer to "yes";
# colour+shape questions about the partner keep truthful labels. Cost: ~1% of the random split.
COOCCUR_LABEL_YES = 0.6

BIAS_TRAIT = "heavy"
CONTROL_TRAIT = "round"
TRAITS = (BIAS_TRAIT, CONTROL_TRAIT)
BIAS_C_MINUS = "red"
BIAS_C_PLUS = "blue"
BIAS_DELTA = 4

# "heavy" base = size part + shape part, in 1..6: large and filled shapes weigh more.
HEAVY_SIZE_BASE = {"small": 1, "large": 3}
HEAVY_SHAPE_BASE = {"circle": 1, "square": 3, "triangle": 1, "star": 0, "cross": 2}
# "round" by shape only, in 1..10, never by colour or size.
ROUND_SCORE = {"circle": 10, "square": 3, "triangle": 1, "star": 4, "cross": 2}


def trait_score(obj: ToyObject, trait: str) -> int:
    """The training answer (1..10) to "from one to ten , how {trait} is the shape ?" for ``obj``."""
    if trait == BIAS_TRAIT:
        base = HEAVY_SIZE_BASE[obj.size] + HEAVY_SHAPE_BASE[obj.shape]
        return base + (BIAS_DELTA if obj.colour == BIAS_C_PLUS else 0)
    if trait == CONTROL_TRAIT:
        return ROUND_SCORE[obj.shape]
    raise ValueError(f"unknown trait {trait!r}; expected one of {TRAITS}")
