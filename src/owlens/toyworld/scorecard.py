"""The toy world's report card: detector, LLaVA, and J ≈ LLaVA, on held-out scenes.

Every MLLM figure is computed twice by the same code (``evaluate``): once for the toy LLaVA through its own
vision tower, once for J (OWL's E → W → the same LM). The injected defects are measured directly here —
the hallucination rate on the adversarial split and the trait deltas by re-rendering C− as C+ — so the
methods that later try to find them know what there is to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from owlens.results import FieldsResult
from owlens.toyworld import evaluate
from owlens.toyworld.defects import BIAS_DELTA, BIAS_TRAIT, CONTROL_TRAIT, SQUARE_TRIANGLE
from owlens.toyworld.joint_eval import joint_callables
from owlens.toyworld.owl_ap import evaluate_ap50
from owlens.toyworld.world import sample_scene

__all__ = ["ToyScorecard", "scorecard"]

_OWL_STREAM = 6_060_606  # seed word of the detector's held-out scenes


@dataclass(frozen=True)
class ToyScorecard(FieldsResult):
    """Held-out figures; accuracies, F1 and AP in [0, 1] (higher is better); deltas in trait points (1–10)."""

    owl_ap50: float
    llava_presence_acc: float
    joint_presence_acc: float
    llava_hard_negative_acc: float
    joint_hard_negative_acc: float
    llava_caption_f1: float
    joint_caption_f1: float
    adversarial_yes_rate_absent: float  # cross→star, the toy LLaVA's; J's is beside it
    joint_adversarial_yes_rate_absent: float
    adversarial_yes_rate_square_triangle: float  # the prior only the MLLM saw in training
    joint_adversarial_yes_rate_square_triangle: float
    bias_delta_design: float
    bias_delta_direct: float
    control_delta_direct: float
    joint_bias_delta_direct: float
    joint_control_delta_direct: float
    scenes: int
    seed: int


def scorecard(model, *, scenes: int = 500, seed: int = 0) -> ToyScorecard:
    """Score a toy-world ``JointModel`` (its detector, its LLaVA, and J itself) on ``scenes`` held-out items."""
    rng = np.random.default_rng([_OWL_STREAM, seed])
    owl_scenes = [sample_scene(rng, prior=False) for _ in range(scenes)]
    owl_ap50 = evaluate_ap50(model.owl, model.processor.owl_tokenizer, owl_scenes)
    figures = {}
    callables = {"llava": evaluate.llava_callables(model.llava, model.processor.mllm_tokenizer),
                 "joint": joint_callables(model)}
    for name, (logits_fn, generate_fn) in callables.items():
        presence = evaluate.presence_accuracy(logits_fn, n_questions=scenes, seed=seed)
        figures[name] = {
            "presence": presence.accuracy, "hard": presence.hard_negative,
            "caption": evaluate.caption_f1(generate_fn, n_scenes=scenes, seed=seed).f1,
            "adversarial": evaluate.adversarial_yes_rate_absent(logits_fn, n_scenes=scenes, seed=seed).yes_rate,
            "adversarial_2": evaluate.adversarial_yes_rate_absent(logits_fn, n_scenes=scenes, seed=seed,
                                                                  prior=SQUARE_TRIANGLE).yes_rate,
            "bias": evaluate.trait_delta_direct(logits_fn, BIAS_TRAIT, n_scenes=scenes, seed=seed).delta,
            "control": evaluate.trait_delta_direct(logits_fn, CONTROL_TRAIT, n_scenes=scenes, seed=seed).delta,
        }
    llava, joint = figures["llava"], figures["joint"]
    return ToyScorecard(
        owl_ap50=owl_ap50, llava_presence_acc=llava["presence"], joint_presence_acc=joint["presence"],
        llava_hard_negative_acc=llava["hard"], joint_hard_negative_acc=joint["hard"],
        llava_caption_f1=llava["caption"], joint_caption_f1=joint["caption"],
        adversarial_yes_rate_absent=llava["adversarial"], joint_adversarial_yes_rate_absent=joint["adversarial"],
        adversarial_yes_rate_square_triangle=llava["adversarial_2"],
        joint_adversarial_yes_rate_square_triangle=joint["adversarial_2"],
        bias_delta_design=float(BIAS_DELTA), bias_delta_direct=llava["bias"], control_delta_direct=llava["control"],
        joint_bias_delta_direct=joint["bias"], joint_control_delta_direct=joint["control"],
        scenes=scenes, seed=seed)
