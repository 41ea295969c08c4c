"""One saliency case scored for every method: its truth, its causal truth, and the games on the MLLM's logit.

- object cases: pointing game (mask, 4 px; box, 0 px), mass and rank accuracy, the WSOL box curves, the E-token
  and the pixel-space deletion/insertion games, causal pointing;
- cue cases: cue pointing (against every cue object), causal pointing, and for the first prior (cross→star)
  the E-token games;
- control cases (cue candidates answered "no"): cue pointing and causal pointing only, no games: nothing of
  theirs is summarised from a game.
Causal pointing is None where the case has no single cause (``evaluation.causal``).
"""

from __future__ import annotations

import numpy as np

from owlens.evaluation.causal_pointing import CausalPointing
from owlens.evaluation.cue import CuePointing
from owlens.evaluation.mass_accuracy import MassAccuracy
from owlens.evaluation.maxboxacc import box_iou_curves
from owlens.evaluation.pointing_game import PointingGame
from owlens.evaluation.rank_accuracy import RankAccuracy

__all__ = ["POINTING_TOLERANCE_PX", "causal_row", "score_maps"]

POINTING_TOLERANCE_PX = 4  # Zhang et al.'s 15 px on ~224 px images, scaled to the toy world's 64 px


def causal_row(case, truth) -> dict:
    """The journaled part of a case's ``CausalTruth``: the cause, and whether it is the object the case expects."""
    cause = truth.cause
    shape = None if cause is None else case.scene.objects[cause].shape
    expected = case.cue.split("→")[0] if case.cue else case.token
    return {"cause": cause, "cause_shape": shape, "drops": [round(d, 4) for d in truth.drops],
            "logit": round(truth.logit, 4), "p_yes": truth.p_yes, "p_yes_without_cues": truth.p_yes_without_cues,
            "cause_is_cue": bool(case.cue) and shape == expected,
            "cause_is_named": case.kind == "object" and shape == expected}


def _localisation(case, saliency_map) -> dict:
    largest, best = box_iou_curves(saliency_map, case.truth_boxes)
    return {"pointing_game": PointingGame(POINTING_TOLERANCE_PX)(saliency_map, case.truth_mask),
            "pointing_game_box": PointingGame(0)(saliency_map, case.truth_boxes),
            "mass_accuracy": MassAccuracy()(saliency_map, case.truth_mask),
            "rank_accuracy": RankAccuracy()(saliency_map, case.truth_mask),
            "iou_largest": np.round(largest, 5).tolist(), "iou_best": np.round(best, 5).tolist()}


def score_maps(case, truth, maps: dict, games: dict | None) -> dict:
    """maps {method: (H, W)}; games {method: {"tokens", "pixels"}} (None for controls) → {method: {metric: value}}."""
    cause = truth.cause
    cause_mask = None if cause is None else case.scene.objects[cause].mask
    out = {}
    for name, saliency_map in maps.items():
        row = {"causal_pointing": None if cause_mask is None else CausalPointing(POINTING_TOLERANCE_PX)(
            saliency_map, cause_mask)}
        if case.kind in ("cue", "control"):
            row["cue_pointing"] = CuePointing(POINTING_TOLERANCE_PX)(saliency_map, case.truth_mask)
        else:
            row.update(_localisation(case, saliency_map))
        if games is not None:
            tokens, pixels = games[name]["tokens"], games[name]["pixels"]
            row.update(deletion_auc=tokens.deletion_auc, insertion_auc=tokens.insertion_auc)
            if pixels is not None:
                row.update(deletion_auc_pixel=pixels.deletion_auc, insertion_auc_pixel=pixels.insertion_auc)
        out[name] = row
    return out
