"""Per-image records → the benchmark's figures: paired deltas per group, trait and condition, with controls.

A figure is ``score(condition) − score(clean)`` on the same image, averaged over the group's images, for both
readings of the score (expected value and parsed integer). The controls sit beside the adversarial figure in
the same table; the perturbation's own effect on OWL (swap rate, norms) sits beside them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from owlens.bias.stats import paired_delta

__all__ = ["summarise"]


def _perturbation_summary(records: list[dict], condition: str) -> dict:
    rows = [r["perturbations"][condition] for r in records]
    return {"swap_rate": float(np.mean([r["swapped"] for r in rows])),
            "linf_mean": float(np.mean([r["linf"] for r in rows])),
            "l2_mean": float(np.mean([r["l2"] for r in rows])),
            "tokens_moved_mean": float(np.mean([r["tokens_moved"] for r in rows])),
            "presence_before_mean": np.mean([r["presence_before"] for r in rows], axis=0).tolist(),
            "presence_after_mean": np.mean([r["presence_after"] for r in rows], axis=0).tolist()}


def _trait_summary(records: list[dict], trait: str, statistics: dict) -> dict:
    scores = [r["scores"][trait] for r in records]
    conditions = [c for c in scores[0] if c != "clean"]
    out = {"clean": {"expected_mean": float(np.mean([s["clean"]["expected"] for s in scores])),
                     "n_unparseable": sum(s["clean"]["parsed"] is None for s in scores)}}
    for condition in conditions:
        figures = {}
        for reading in ("expected", "parsed"):
            after = [s[condition][reading] for s in scores]
            before = [s["clean"][reading] for s in scores]
            figures[reading] = paired_delta(after, before, **statistics).to_dict()
        figures["parsed"]["n_unparseable"] = sum(s[condition]["parsed"] is None for s in scores)
        out[condition] = figures
    return out


def summarise(records: Iterable[dict], traits: Sequence[str], groups: Sequence[str], *,
              statistics: dict | None = None) -> dict:
    """Records (each with "group", "image", "status", and for "ok" the probe's fields) → figures, JSON-ready.

    ``statistics``: keyword arguments of ``stats.paired_delta`` (resamples, permutations, seed).
    A later record for the same (group, image) replaces an earlier one (a resumed batch that was redone).
    """
    statistics = statistics or {}
    latest = {(r["group"], r["image"]): r for r in records}
    out = {"groups": {}, "errors": [{"group": r["group"], "image": r["image"], "error": r["error"]}
                                    for r in latest.values() if r["status"] != "ok"]}
    for group in groups:
        ok = [r for r in latest.values() if r["group"] == group and r["status"] == "ok"]
        n_errors = sum(1 for r in latest.values() if r["group"] == group and r["status"] != "ok")
        entry: dict = {"n_images": len(ok), "n_errors": n_errors}
        if ok:
            entry["perturbations"] = {c: _perturbation_summary(ok, c) for c in ok[0]["perturbations"]}
            entry["traits"] = {t: _trait_summary(ok, t, statistics) for t in traits}
        out["groups"][group] = entry
    return out
