"""The saliency benchmark's per-case rows → its report: means, the causal-truth counts, paired differences.

Rows are what ``saliency_benchmark`` journals, one per case: ``{"kind", "index", "cue", "correct", "causal",
"methods": {name: {metric: value}}}``. Every interval is a 95% percentile bootstrap over cases (2,000 resamples,
seed 0); a paired difference resamples the per-case differences, so both methods are read on the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from owlens.evaluation.maxboxacc import MaxBoxAcc, MaxBoxAccV2
from owlens.statistics import RESAMPLES, bootstrap_means, percentile_interval

__all__ = ["RESAMPLES", "SaliencyReport", "bootstrap", "summarise"]
_LOCALISATION = ("pointing_game", "pointing_game_box", "mass_accuracy", "rank_accuracy")
_PAIRED_ON_OBJECTS = ("pointing_game", "deletion_auc_pixel", "insertion_auc_pixel")


@dataclass(frozen=True)
class SaliencyReport:
    """methods: {name: {metric: value}}; scenes: object cases; cue_cases: K of the first cue (cross→star)."""

    methods: dict[str, dict]
    scenes: int
    cue_cases: int
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"methods": self.methods, "scenes": self.scenes, "cue_cases": self.cue_cases, **self.details}


def bootstrap(values: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES) -> list[float] | None:
    """[mean, lo, hi] of ``values`` with a 95% percentile bootstrap interval; None for no values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return None
    # One case still gets its zero-width interval (unlike a bias figure's NaN): a scene count, not a claim.
    return [float(values.mean()), *percentile_interval(bootstrap_means(values, resamples=resamples, seed=seed))]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _values(rows, name: str, key: str) -> list:
    return [r["methods"][name].get(key) for r in rows]


def _groups(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """"object" and every cue's name → the rows of that group whose logit has a single cause."""
    groups: dict[str, list[dict]] = {"object": []}
    for row in rows:
        if row["kind"] == "object":
            groups["object"].append(row)
        elif row["kind"] == "cue":
            groups.setdefault(row.get("cue") or "", []).append(row)
    return {g: [r for r in members if (r.get("causal") or {}).get("cause") is not None]
            for g, members in groups.items()}


def _method_table(name: str, objects, right, cues_by_name, controls_by_name, groups, first_cue) -> dict:
    table = {key: _mean(_values(right, name, key)) for key in _LOCALISATION}
    table.update(
        maxboxacc=MaxBoxAcc().from_curves(_values(right, name, "iou_largest")) if right else None,
        maxboxacc_v2=MaxBoxAccV2().from_curves(_values(right, name, "iou_best")) if right else None,
        deletion_auc=_mean(_values(objects, name, "deletion_auc")),
        insertion_auc=_mean(_values(objects, name, "insertion_auc")),
        deletion_auc_pixel=_mean(_values(objects, name, "deletion_auc_pixel")),
        insertion_auc_pixel=_mean(_values(objects, name, "insertion_auc_pixel")))
    cues, controls = cues_by_name.get(first_cue, []), controls_by_name.get(first_cue, [])
    table.update(cue_pointing=_mean(_values(cues, name, "cue_pointing")),
                 cue_pointing_control=_mean(_values(controls, name, "cue_pointing")),
                 cue_deletion_auc=_mean(_values(cues, name, "deletion_auc")),
                 cue_insertion_auc=_mean(_values(cues, name, "insertion_auc")))
    intervals = {g: bootstrap(_values(members, name, "causal_pointing")) for g, members in groups.items()}
    table["causal_pointing"] = {g: None if ci is None else ci[0] for g, ci in intervals.items()}
    table["causal_pointing_ci"] = {g: None if ci is None else ci[1:] for g, ci in intervals.items()}
    return table


def _cue_block(name: str, cues, controls, methods) -> dict:
    causal = [r.get("causal") or {} for r in cues]
    return {
        "cases": len(cues), "controls": len(controls),
        "verified_causal": sum(bool(c.get("cause_is_cue")) for c in causal),
        "no_single_cause": sum(c.get("cause") is None for c in causal),
        "p_yes": _mean([c.get("p_yes") for c in causal]),
        "p_yes_without_cues": _mean([c.get("p_yes_without_cues") for c in causal]),
        "methods": {m: {"cue_pointing": _mean(_values(cues, m, "cue_pointing")),
                        "cue_pointing_control": _mean(_values(controls, m, "cue_pointing")),
                        "causal_pointing_control": _mean(_values(controls, m, "causal_pointing"))}
                    for m in methods},
    }


def _paired(groups, objects, methods, *, against: str) -> dict:
    """Each method minus ``against``, per case: [mean, lo, hi] for the object metrics and causal pointing."""
    if against not in methods:
        return {}
    out = {}
    for name in [m for m in methods if m != against]:
        entry = {}
        for key in _PAIRED_ON_OBJECTS:
            pool = [r for r in objects if r["correct"]] if key == "pointing_game" else objects
            diffs = [r["methods"][name][key] - r["methods"][against][key] for r in pool
                     if r["methods"][name].get(key) is not None and r["methods"][against].get(key) is not None]
            entry[key] = bootstrap(diffs)
        entry["causal_pointing"] = {g: bootstrap([r["methods"][name]["causal_pointing"]
                                                  - r["methods"][against]["causal_pointing"] for r in members])
                                    for g, members in groups.items()}
        out[name] = entry
    return out


def _paired_ga(objects, cues, methods) -> dict:
    """GA minus each other method (the paper's method read against the rest), E-token games and cue pointing."""
    if "ga" not in methods:
        return {}
    out = {}
    for name in [m for m in methods if m != "ga"]:
        out[name] = {}
        for group, key in ((objects, "deletion_auc"), (objects, "insertion_auc"), (cues, "cue_pointing")):
            diffs = [r["methods"]["ga"][key] - r["methods"][name][key] for r in group]
            if diffs:
                out[name][key] = bootstrap(diffs)
    return out


def summarise(rows: Sequence[dict], methods: Sequence[str], *, first_cue: str = "cross→star") -> SaliencyReport:
    """Per-case rows (as journaled) → the report; metrics with no case to average over are None."""
    objects = [r for r in rows if r["kind"] == "object"]
    right = [r for r in objects if r["correct"]]
    cues_by_name: dict[str, list] = {}
    controls_by_name: dict[str, list] = {}
    for row in rows:
        if row["kind"] in ("cue", "control"):
            target = cues_by_name if row["kind"] == "cue" else controls_by_name
            target.setdefault(row.get("cue") or first_cue, []).append(row)
    groups = _groups(rows)
    table = {name: _method_table(name, objects, right, cues_by_name, controls_by_name, groups, first_cue)
             for name in methods}
    causal = [r.get("causal") or {} for r in objects]
    details = {
        "cue_controls": len(controls_by_name.get(first_cue, [])),
        "cues": {name: _cue_block(name, cues_by_name.get(name, []), controls_by_name.get(name, []), methods)
                 for name in sorted(set(cues_by_name) | set(controls_by_name))},
        "causal": {"object": {"cases": len(objects), "single_cause": len(groups["object"]),
                              "no_single_cause": sum(c.get("cause") is None for c in causal),
                              "named_object_is_cause": sum(bool(c.get("cause_is_named")) for c in causal)}},
        "paired": _paired(groups, objects, methods, against="detection_only"),
        "paired_ga": _paired_ga(objects, cues_by_name.get(first_cue, []), methods),
    }
    return SaliencyReport(table, len(objects), len(cues_by_name.get(first_cue, [])), details)
