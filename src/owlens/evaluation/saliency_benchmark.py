"""Every explainer on held-out toy scenes, scored against the truth and against the MLLM (issue 4, "Bars").

``run_saliency_benchmark(model, n_scenes=500, seed=0)`` explains the cases of ``saliency_cases`` with every
method of ``explain.registry`` and reports, per method:
- plausibility, on the object cases whose token the model gets right: ``pointing_game`` (truth: the object's
  mask, 4 px tolerance; ``pointing_game_box``: its box, no tolerance), ``mass_accuracy``, ``rank_accuracy``
  (mask), ``maxboxacc`` and ``maxboxacc_v2`` (box);
- faithfulness, on every object case: ``deletion_auc`` (lower is better) and ``insertion_auc`` (higher is
  better) of the token's raw logit, image tokens of E replaced by the mean patch token of 64 reference scenes;
- the cue test: ``cue_pointing`` over the K cue cases (and their deletion/insertion AUCs, ``cue_*``), and
  ``cue_pointing_control``: the same score on the cue candidates the model answered "no" to (the "yes" logit
  explained where it did not win). A map of the hallucination's cause should find the cue on the cue cases;
  one that lands on the cue as often on the controls is reading the scene (a cross is the most star-like
  object there), not the hallucination.
One JSON line per case is appended to ``out_dir`` as it is done, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from owlens.evaluation.cue import CuePointing
from owlens.evaluation.insertion_deletion import DeletionInsertion
from owlens.evaluation.mass_accuracy import MassAccuracy
from owlens.evaluation.maxboxacc import MaxBoxAcc, MaxBoxAccV2, box_iou_curves
from owlens.evaluation.pointing_game import PointingGame
from owlens.evaluation.rank_accuracy import RankAccuracy
from owlens.evaluation.saliency_cases import SaliencyCase, cue_candidates, object_cases, reference_token

__all__ = ["SaliencyReport", "run_saliency_benchmark", "summarise", "POINTING_TOLERANCE_PX"]

POINTING_TOLERANCE_PX = 4  # Zhang et al.'s 15 px on ~224 px images, scaled to the toy world's 64 px
RECORDS = "saliency-cases.jsonl"


@dataclass(frozen=True)
class SaliencyReport:
    """methods: {name: {metric: value}}; scenes: object cases; cue_cases: K (cue candidates answered "yes")."""

    methods: dict[str, dict[str, float | None]]
    scenes: int
    cue_cases: int
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"methods": self.methods, "scenes": self.scenes, "cue_cases": self.cue_cases, **self.details}


def _next_token_logits(model, embedding: torch.Tensor, prompts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Logits (n, V) of the token after each prompt (left-padded batches: the last column is the next token)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            logits = model.logits(embedding[start:start + batch_size], list(prompts[start:start + batch_size]))
            out.append(logits[:, -1].float().cpu())
    return torch.cat(out)


def _encode(model, cases: Sequence[SaliencyCase], batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.encode_images([c.scene.pil() for c in cases[s:s + batch_size]])
                          for s in range(0, len(cases), batch_size)])


def _explainers(model, methods: Sequence[str], case_seed: int) -> dict:
    from owlens.explain.registry import make_explainer

    # The random map is seeded per case, so a resumed run draws the same maps as an uninterrupted one.
    return {name: make_explainer(name, model, **({"seed": case_seed} if name == "random" else {}))
            for name in methods}


def _score(case: SaliencyCase, saliency, embedding, ids, deletion: DeletionInsertion) -> dict:
    from owlens.explain.targets import resolve_token

    token_id = resolve_token(deletion.model.processor.mllm_tokenizer, case.token)[0]
    game = deletion(embedding, ids, token_id, saliency.map)
    row = {"deletion_auc": game.deletion_auc, "insertion_auc": game.insertion_auc}
    if case.kind in ("cue", "control"):
        row["cue_pointing"] = CuePointing(POINTING_TOLERANCE_PX)(saliency.map, case.truth_mask)
        return row
    largest, best = box_iou_curves(saliency.map, case.truth_boxes)
    row.update(pointing_game=PointingGame(POINTING_TOLERANCE_PX)(saliency.map, case.truth_mask),
               pointing_game_box=PointingGame(0)(saliency.map, case.truth_boxes),
               mass_accuracy=MassAccuracy()(saliency.map, case.truth_mask),
               rank_accuracy=RankAccuracy()(saliency.map, case.truth_mask),
               iou_largest=np.round(largest, 5).tolist(), iou_best=np.round(best, 5).tolist())
    return row


def _explain_case(model, case: SaliencyCase, embedding: torch.Tensor, methods: Sequence[str],
                  deletion: DeletionInsertion, seed: int) -> dict:
    from owlens.explain.inputs import ExplainInputs
    from owlens.explain.targets import TokenTarget

    inputs = ExplainInputs.from_embedding(model, embedding[None], case.prompt)
    ids = inputs.input_ids[0][inputs.attention_mask[0].bool()]
    case_seed = zlib.crc32(f"{seed}/{case.kind}/{case.index}".encode())
    scores = {}
    for name, explainer in _explainers(model, methods, case_seed).items():
        saliency = explainer.explain(inputs, TokenTarget(case.token, case.query))
        scores[name] = _score(case, saliency, embedding, ids, deletion)
    return scores


def run_saliency_benchmark(model, *, n_scenes: int = 500, seed: int = 0, methods: Sequence[str] | None = None,
                           out_dir: str | Path | None = None, steps: int | None = 32, batch_size: int = 64,
                           progress: bool = True, log: Callable[[str], None] | None = None) -> SaliencyReport:
    """Explain ``n_scenes`` object cases and the cue cases among ``n_scenes`` cue candidates with every method."""
    from tqdm.auto import tqdm

    from owlens.evaluation._journal import CaseJournal
    from owlens.explain.registry import METHODS

    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown explanation methods {unknown}; expected some of {', '.join(METHODS)}")
    started = time.perf_counter()
    log = log or (lambda message: None)
    objects, candidates = object_cases(n_scenes, seed), cue_candidates(n_scenes, seed)
    object_e, cue_e = _encode(model, objects, batch_size), _encode(model, candidates, batch_size)
    tokenizer = model.processor.mllm_tokenizer
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no")}
    predicted = _next_token_logits(model, object_e, [c.prompt for c in objects], batch_size).argmax(-1)
    correct = [int(p) == tokenizer.convert_tokens_to_ids(c.token) for p, c in zip(predicted, objects)]
    answers = _next_token_logits(model, cue_e, [c.prompt for c in candidates], batch_size)[:, [ids["yes"], ids["no"]]]
    said_yes = (answers.softmax(-1)[:, 0] > 0.5).tolist()
    cues = [(c, e) for c, e, yes in zip(candidates, cue_e, said_yes) if yes]
    controls = [(replace(c, kind="control"), e) for c, e, yes in zip(candidates, cue_e, said_yes) if not yes]
    log(f"{sum(correct)}/{n_scenes} object tokens correct; {len(cues)}/{n_scenes} cue candidates answered 'yes'")
    steps = None if steps is None else min(steps, model.grid[0] * model.grid[1])
    deletion = DeletionInsertion(model, steps=steps, replacement=reference_token(model, seed), batch_size=batch_size)
    config = {"scenes": n_scenes, "seed": seed, "methods": methods, "steps": steps}
    work = ([(c, e, {"correct": ok}) for c, e, ok in zip(objects, object_e, correct)]
            + [(c, e, {}) for c, e in cues + controls])
    with CaseJournal(out_dir, RECORDS, config) as journal:
        todo = [item for item in work if (item[0].kind, item[0].index) not in journal.done]
        for case, embedding, extra in tqdm(todo, disable=not progress, desc="saliency", unit="case"):
            journal.append({"kind": case.kind, "index": case.index, "token": case.token, **extra,
                            "methods": _explain_case(model, case, embedding, methods, deletion, seed)})
        rows = journal.rows
    summary = summarise(rows, methods)
    summary.details.update(correct_tokens=sum(correct), cue_candidates=n_scenes, seed=seed, steps=steps,
                           pointing_tolerance_px=POINTING_TOLERANCE_PX, seconds=round(time.perf_counter() - started, 1))
    return summary


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(rows: Sequence[dict], methods: Sequence[str]) -> SaliencyReport:
    """Per-case rows (as journaled) → the report; metrics with no case to average over are None."""
    objects = [r for r in rows if r["kind"] == "object"]
    right = [r for r in objects if r["correct"]]
    cues = [r for r in rows if r["kind"] == "cue"]
    controls = [r for r in rows if r["kind"] == "control"]
    table = {}
    for name in methods:
        def values(group, key, name=name):
            return [r["methods"][name][key] for r in group]

        table[name] = {key: _mean(values(right, key)) for key in
                       ("pointing_game", "pointing_game_box", "mass_accuracy", "rank_accuracy")}
        table[name].update(
            maxboxacc=MaxBoxAcc().from_curves(values(right, "iou_largest")) if right else None,
            maxboxacc_v2=MaxBoxAccV2().from_curves(values(right, "iou_best")) if right else None,
            deletion_auc=_mean(values(objects, "deletion_auc")), insertion_auc=_mean(values(objects, "insertion_auc")),
            cue_pointing=_mean(values(cues, "cue_pointing")),
            cue_pointing_control=_mean(values(controls, "cue_pointing")),
            cue_deletion_auc=_mean(values(cues, "deletion_auc")),
            cue_insertion_auc=_mean(values(cues, "insertion_auc")))
    return SaliencyReport(table, len(objects), len(cues),
                          {"cue_controls": len(controls), "paired": _paired(objects, cues, methods)})


def _paired(objects: Sequence[dict], cues: Sequence[dict], methods: Sequence[str], *, resamples: int = 2000) -> dict:
    """GA minus each other method, per case, with a 95% percentile bootstrap interval (seeded)."""
    if "ga" not in methods:
        return {}
    rng = np.random.default_rng(0)
    out = {}
    for name in [m for m in methods if m != "ga"]:
        out[name] = {}
        for group, key in ((objects, "deletion_auc"), (objects, "insertion_auc"), (cues, "cue_pointing")):
            diff = np.array([r["methods"]["ga"][key] - r["methods"][name][key] for r in group])
            if len(diff) == 0:
                continue
            boot = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(1)
            out[name][key] = [float(diff.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    return out
