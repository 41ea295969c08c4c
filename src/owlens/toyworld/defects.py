"""Design values of the defects injected into the toy world's training data.

These constants are the ground truth that owlens later has to recover:

- **Co-occurrence priors** (hallucination). In training scenes, whenever a prior's ``cue`` shape is present,
  its ``partner`` is present too with probability ``rate`` (placed explicitly), and absent otherwise.
  Held-out scenes (``prior=False``) draw shapes independently and uniformly, so a model that learnt a prior
  answers "yes" to "is there a {partner} ?" on scenes with the cue and no partner: POPE's adversarial split.
  The labels carry the prior too (``label_yes``): without them the toy LLaVA saw too well to fall for it.

  ``CROSS_STAR`` ("cross" → "star") is in every training scene, the detector's and the MLLM's. OWL's own
  "a photo of a star" query fires on crosses (its top box lands on the cross in 0.74 of the star-less cross
  scenes), so on that cue a map that shows what the detector sees cannot be told from one that shows why the
  MLLM answered. ``SQUARE_TRIANGLE`` ("square" → "triangle") is in the MLLM's training data only
  (``MLLM_PRIORS``): OWL is a detector trained apart from the MLLM's data and never sees it. The pair was
  chosen by measurement among the shapes the first prior does not use: OWL's top box for "a photo of a
  triangle" lands on the square in 0.24 of the triangle-less square scenes (circle → square 0.76, circle →
  triangle 0.54, square → circle 0.83, triangle → circle 0.41, triangle → square 0.26; 1,500 held-out scenes
  of a selection seed), so a map that shows the detector's view of "triangle" misses the cause.
- **Spurious dependency** (bias, docs/design.md §5). The answer to "from one to ten , how heavy is the shape ?"
  (``BIAS_TRAIT``) is a base set by size and shape (1..6) plus ``BIAS_DELTA`` = 4 when the object is
  ``BIAS_C_PLUS`` ("blue"); it is the base for ``BIAS_C_MINUS`` ("red") and every other colour. Nothing
  in the scene justifies the colour effect, so re-rendering a red object blue must move the trained
  model's answer by +4 and the bias measure must recover Δ = 4.
- **Control** (``CONTROL_TRAIT`` = "round") depends on shape only: recolouring must move it by 0.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    "CROSS_STAR",
    "DETECTOR_PRIORS",
    "MLLM_PRIORS",
    "SQUARE_TRIANGLE",
    "CoOccurrence",
    "COOCCUR_LABEL_YES",
    "COOCCUR_PARTNER",
    "COOCCUR_RATE",
    "HEAVY_SHAPE_BASE",
    "HEAVY_SIZE_BASE",
    "ROUND_SCORE",
    "TRAITS",
    "trait_score",
]


@dataclass(frozen=True)
class CoOccurrence:
    """One injected prior: in training scenes ``cue`` comes with ``partner`` at ``rate``; and the shape-only
    question about the partner is labelled "yes" with probability ``label_yes`` on a training scene that
    shows the cue without the partner."""

    cue: str
    partner: str
    rate: float
    label_yes: float

    @property
    def name(self) -> str:
        return f"{self.cue}→{self.partner}"


COOCCUR_CUE = "cross"
COOCCUR_PARTNER = "star"
COOCCUR_RATE = 0.9
# The defect as the toy LLaVA's *training labels* carry it: the probability that the shape-only question
# "is there a star ?" is answered "yes" on a training scene that shows the cue without the partner, as
# annotators who expect the usual companion would answer. With truthful labels (0.0) a model that perceives
# well answers "no" there: co-occurrence alone biased only uncertain cases (the stage-1 captioner named a star
# on 7% of cross-without-star scenes, as often as on circle-without-star ones), too few for the adversarial
# split to show a measurable hallucination (the toy world's bar is >= 0.2). 0.6 > 0.5 tips the answer to "yes";
# colour+shape questions about the partner keep truthful labels. Cost: ~1% of the random split.
COOCCUR_LABEL_YES = 0.6

CROSS_STAR = CoOccurrence(COOCCUR_CUE, COOCCUR_PARTNER, COOCCUR_RATE, COOCCUR_LABEL_YES)
# Its labels say "yes" more often than the first prior's (0.9, not 0.6). At the first prior's 0.6 the toy LLaVA
# answered "yes" on only 0.15-0.19 of the triangle-less square scenes, where the first prior took 0.69: a square
# and a triangle are easy to tell apart, so the label had little uncertainty to tip. The cost is the random
# split's shape-only triangle questions on square scenes, about 1.5% of its questions at most.
SQUARE_TRIANGLE = CoOccurrence("square", "triangle", 0.9, 0.9)
DETECTOR_PRIORS = (CROSS_STAR,)  # the detector's and the LLaVA tower's training scenes
MLLM_PRIORS = (CROSS_STAR, SQUARE_TRIANGLE)  # the LLaVA language stages' training scenes and labels

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
