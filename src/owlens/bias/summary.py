"""Per-image records → the benchmark's figures: paired deltas per group, trait and condition, with controls.

A figure is ``score(condition) − score(clean)`` on the same image, averaged over the group's images, for both
readings of the score (expected value and parsed integer). The controls sit beside the adversarial figure in
the same table; the perturbation's own effect on OWL (swap rate, norms) sits beside them too. The bias net of
each control, ``score(adversarial) − score(control)`` on the same image, is the figure to read: a control
moves E as far as the attack does, without the change the trait may depend on (docs/design.md §5), so what it
does to the answer is not the bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from owlens.bias.stats import PairedDelta, paired_delta

__all__ = ["CONTROL_CONDITIONS", "BiasSummary", "ConditionFigures", "GroupSummary", "ImageError",
           "PerturbationEffect", "TraitFigures", "summarise"]

# The conditions the adversarial one is read against, as ``probe.BiasProbe`` names them (``null`` only where the
# spec names a semantic null concept). Other scored embeddings (the toy world's re-render) are not controls.
CONTROL_CONDITIONS = ("random", "orthogonal", "identity", "null")


@dataclass(frozen=True)
class PerturbationEffect:
    """What one condition's δ did to OWL over a group's images (means over images).

    swap_rate: share of images where OWL's presence of C+ rose above C−'s. linf_mean, l2_mean: mean norms of δ
    over the whole (1+N)·d tensor. tokens_moved_mean: mean count of E tokens δ changes. presence_before_mean,
    presence_after_mean: (C−, C+) OWL presences on E and on E'.
    """

    swap_rate: float
    linf_mean: float
    l2_mean: float
    tokens_moved_mean: float
    presence_before_mean: tuple[float, ...]
    presence_after_mean: tuple[float, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "presence_before_mean": list(self.presence_before_mean),
                "presence_after_mean": list(self.presence_after_mean)}


@dataclass(frozen=True)
class ConditionFigures:
    """One trait under one condition: ``PairedDelta`` of condition − clean for both readings of the score.

    expected: of the expected 1–10 score (softmax over "1".."10"). parsed: of the greedy answer parsed as an
    integer (the paper's reading); n_unparseable: images whose answer under the condition did not parse.
    """

    expected: PairedDelta
    parsed: PairedDelta
    n_unparseable: int

    def to_json(self) -> dict:
        return {"expected": self.expected.to_dict(), "parsed": {**self.parsed.to_dict(),
                                                                "n_unparseable": self.n_unparseable}}


@dataclass(frozen=True)
class TraitFigures:
    """One trait in one group: the clean scores, and ``ConditionFigures`` per condition (adversarial, controls).

    clean_expected_mean: mean expected score on the clean E; clean_n_unparseable: clean answers that did not
    parse. conditions: by condition name, in the records' order.
    """

    clean_expected_mean: float
    clean_n_unparseable: int
    conditions: dict[str, ConditionFigures]

    def to_json(self) -> dict:
        return {"clean": {"expected_mean": self.clean_expected_mean, "n_unparseable": self.clean_n_unparseable},
                **{name: figures.to_json() for name, figures in self.conditions.items()}}


@dataclass(frozen=True)
class GroupSummary:
    """One image group. n_images: readable images; n_errors: unreadable ones. perturbations and traits (by
    condition / trait name) are None when no image could be read.

    net: by trait, then by control: ``ConditionFigures`` of adversarial − control, image by image (the bias net
    of that control; its n_unparseable counts the images where either answer did not parse).
    """

    n_images: int
    n_errors: int
    perturbations: dict[str, PerturbationEffect] | None = None
    traits: dict[str, TraitFigures] | None = None
    net: dict[str, dict[str, ConditionFigures]] | None = None

    def to_json(self) -> dict:
        out: dict = {"n_images": self.n_images, "n_errors": self.n_errors}
        if self.perturbations is not None:
            out["perturbations"] = {c: effect.to_json() for c, effect in self.perturbations.items()}
        if self.traits is not None:
            out["traits"] = {t: figures.to_json() for t, figures in self.traits.items()}
        if self.net is not None:
            out["net"] = {t: {c: figures.to_json() for c, figures in controls.items()}
                          for t, controls in self.net.items()}
        return out


@dataclass(frozen=True)
class ImageError:
    """An image that could not be read or scored: its group, its file name and why."""

    group: str
    image: str
    error: str


@dataclass(frozen=True)
class BiasSummary:
    """The benchmark's figures: ``GroupSummary`` by group name (the spec's order) and the images that failed;
    ``spec``: the spec that produced them (``BenchmarkSpec.to_dict()``) when a run made them, else None.

    ``to_json()`` is summary.json's content (and what run.json's bias section and the plot read).
    """

    groups: dict[str, GroupSummary]
    errors: tuple[ImageError, ...] = ()
    spec: dict | None = None

    def to_json(self) -> dict:
        return {**({"spec": self.spec} if self.spec is not None else {}),
                "groups": {name: group.to_json() for name, group in self.groups.items()},
                "errors": [asdict(error) for error in self.errors]}


def _perturbation_summary(records: list[dict], condition: str) -> PerturbationEffect:
    rows = [r["perturbations"][condition] for r in records]
    return PerturbationEffect(float(np.mean([r["swapped"] for r in rows])), float(np.mean([r["linf"] for r in rows])),
                              float(np.mean([r["l2"] for r in rows])),
                              float(np.mean([r["tokens_moved"] for r in rows])),
                              tuple(np.mean([r["presence_before"] for r in rows], axis=0).tolist()),
                              tuple(np.mean([r["presence_after"] for r in rows], axis=0).tolist()))


def _paired(scores: list[dict], after: str, before: str, statistics: dict) -> dict[str, PairedDelta]:
    """``after`` − ``before`` image by image, for both readings of the score."""
    return {reading: paired_delta([s[after][reading] for s in scores], [s[before][reading] for s in scores],
                                  **statistics)
            for reading in ("expected", "parsed")}


def _trait_summary(records: list[dict], trait: str, statistics: dict) -> TraitFigures:
    scores = [r["scores"][trait] for r in records]
    conditions = {}
    for condition in [c for c in scores[0] if c != "clean"]:
        delta = _paired(scores, condition, "clean", statistics)
        conditions[condition] = ConditionFigures(delta["expected"], delta["parsed"],
                                                 sum(s[condition]["parsed"] is None for s in scores))
    return TraitFigures(float(np.mean([s["clean"]["expected"] for s in scores])),
                        sum(s["clean"]["parsed"] is None for s in scores), conditions)


def _net_summary(records: list[dict], trait: str, statistics: dict) -> dict[str, ConditionFigures]:
    """adversarial − each control the records hold, image by image, for both readings."""
    scores = [r["scores"][trait] for r in records]
    if "adversarial" not in scores[0]:
        return {}
    net = {}
    for control in [c for c in CONTROL_CONDITIONS if c in scores[0]]:
        delta = _paired(scores, "adversarial", control, statistics)
        net[control] = ConditionFigures(delta["expected"], delta["parsed"], delta["parsed"].n_missing)
    return net


def summarise(records: Iterable[dict], traits: Sequence[str], groups: Sequence[str], *,
              statistics: dict | None = None) -> BiasSummary:
    """Records (each with "group", "image", "status", and for "ok" the probe's fields) → ``BiasSummary``.

    ``statistics``: keyword arguments of ``stats.paired_delta`` (resamples, permutations, seed).
    A later record for the same (group, image) replaces an earlier one (a resumed batch that was redone).
    """
    statistics = statistics or {}
    latest = {(r["group"], r["image"]): r for r in records}
    errors = tuple(ImageError(r["group"], r["image"], r["error"]) for r in latest.values() if r["status"] != "ok")
    summaries = {}
    for group in groups:
        ok = [r for r in latest.values() if r["group"] == group and r["status"] == "ok"]
        n_errors = sum(1 for r in latest.values() if r["group"] == group and r["status"] != "ok")
        if not ok:
            summaries[group] = GroupSummary(0, n_errors)
            continue
        perturbations = {c: _perturbation_summary(ok, c) for c in ok[0]["perturbations"]}
        summaries[group] = GroupSummary(len(ok), n_errors, perturbations,
                                        {t: _trait_summary(ok, t, statistics) for t in traits},
                                        {t: _net_summary(ok, t, statistics) for t in traits})
    return BiasSummary(summaries, errors)
