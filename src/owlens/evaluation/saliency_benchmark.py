"""Every explainer on held-out toy scenes, scored against the truth, the causal truth and the MLLM's own logit.

``run_saliency_benchmark(model, n_scenes=500, seed=0)`` explains the cases of ``saliency_cases`` with every
method of ``explain.registry`` and reports, per method (``saliency_summary``):
- plausibility, on the object cases whose token the model gets right: ``pointing_game`` (truth: the object's
  mask, 4 px tolerance; ``pointing_game_box``: its box, no tolerance), ``mass_accuracy``, ``rank_accuracy``
  (mask), ``maxboxacc`` and ``maxboxacc_v2`` (box);
- faithfulness, on every object case: ``deletion_auc`` / ``insertion_auc`` of the token's raw logit with image
  tokens of E replaced by the mean patch token of 64 reference scenes, and ``deletion_auc_pixel`` /
  ``insertion_auc_pixel`` with image patches replaced by the scene's background and E recomputed by OWL;
- causal truth (``evaluation.causal``): every object of every case is taken out of the scene and the explained
  logit read again; ``causal_pointing`` ({"object" or a cue: value}) scores the map against the object whose
  removal lowers the logit most, on the cases that have a single cause;
- the cue tests, one per injected prior (cross→star, which the detector's query finds, and square→triangle,
  which it does not): ``cue_pointing`` over the cue cases (candidates answered "yes") and over the controls
  (answered "no"); the first prior's figures keep their historical keys (``cue_pointing``, ``cue_*``), every
  prior's are under ``cues``.
One JSON line per case is appended to ``out_dir`` as it is done, so a killed run resumes where it stopped.
``fast=False`` plays every game one map at a time (the reference the fast path is tested against).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from owlens.evaluation._journal import CaseJournal
from owlens.evaluation._workers import auto_workers, case_rows
from owlens.evaluation.causal import causal_truth
from owlens.evaluation.games import CaseGames
from owlens.evaluation.insertion_deletion import DeletionInsertion
from owlens.evaluation.pixel_deletion import PixelDeletionInsertion
from owlens.evaluation.saliency_cases import SaliencyCase, cue_candidates, object_cases, reference_token
from owlens.evaluation.saliency_scoring import POINTING_TOLERANCE_PX, causal_row, score_maps
from owlens.evaluation.saliency_summary import SaliencyReport, summarise
from owlens.explain._borrow import borrowed
from owlens.explain._lm_pass import shared_lm_passes
from owlens.explain.inputs import ExplainInputs
from owlens.explain.registry import METHODS, make_explainer
from owlens.explain.targets import TokenTarget, resolve_token
from owlens.models.joint import JointModel
from owlens.toyworld import defects

__all__ = ["POINTING_TOLERANCE_PX", "SaliencyReport", "run_saliency_benchmark", "summarise"]

RECORDS = "saliency-cases.jsonl"
PIXEL_STEPS = 16  # the most pixel steps: each re-encodes an image through OWL, W and the LM


def _next_token_logits(model, embedding: torch.Tensor, prompts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Logits (n, V) of the token after each prompt (left-padded batches: the last column is the next token)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            out.append(model.last_logits(embedding[start:start + batch_size],
                                         list(prompts[start:start + batch_size])).float().cpu())
    return torch.cat(out)


def _encode(model, cases: Sequence[SaliencyCase], batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.encode_images([c.scene.pil() for c in cases[s:s + batch_size]])
                          for s in range(0, len(cases), batch_size)])


class _Games:
    """The deletion/insertion games of one case, for all its maps: shared (fast) or one map at a time (plain)."""

    def __init__(self, model, *, steps, replacement, batch_size: int, fast: bool):
        self.fast = fast
        pixel_steps = None if steps is None else min(PIXEL_STEPS, steps)
        self.shared = CaseGames(model, steps=steps, pixel_steps=pixel_steps, replacement=replacement,
                                batch_size=min(batch_size, 32))
        self.tokens = DeletionInsertion(model, steps=steps, replacement=replacement, batch_size=batch_size)
        self.pixels = PixelDeletionInsertion(model, steps=pixel_steps, batch_size=min(batch_size, 32))

    def __call__(self, case: SaliencyCase, embedding, ids, token_id: int, maps: dict) -> dict:
        with_pixels = case.kind == "object"
        if self.fast:
            scene = case.scene
            return self.shared(embedding, ids, token_id, maps, image=scene.image if with_pixels else None,
                               background=scene.background if with_pixels else None)
        return {name: {"tokens": self.tokens(embedding, ids, token_id, m),
                       "pixels": self.pixels(case.scene.image, case.scene.background, ids, token_id, m)
                       if with_pixels else None} for name, m in maps.items()}


def _explain_case(model, case: SaliencyCase, embedding: torch.Tensor, explainers: dict, truth, games: _Games,
                  seed: int) -> dict:
    # The pixels E was encoded from, for the methods that change the image and encode it again.
    inputs = ExplainInputs.from_embedding(model, embedding[None], case.prompt,
                                          pixel_values=model.pixel_values([case.scene.pil()]))
    ids = inputs.input_ids[0][inputs.attention_mask[0].bool()]
    token_id = resolve_token(model.processor.mllm_tokenizer, case.token)[0]
    maps = {}
    with shared_lm_passes():  # GA and object_attribution, and each pair of baselines, read one LM pass
        for name, explainer in explainers.items():
            if name == "random":  # seeded per case: a resumed run draws the same maps as an uninterrupted one
                explainer = make_explainer("random", model, seed=zlib.crc32(f"{seed}/{case.kind}/{case.cue}/"
                                                                           f"{case.index}".encode()))
            maps[name] = explainer.explain(inputs, TokenTarget(case.token, case.query)).map
    # Games on object cases and on the first prior's cue cases (its cue_* figures); the other priors' cases and
    # every control are read for pointing only, which is all their figures ask and halves the evaluation's cost.
    with_games = case.kind == "object" or (case.kind == "cue" and case.cue == defects.CROSS_STAR.name)
    played = games(case, embedding, ids, token_id, maps) if with_games else None
    return score_maps(case, truth, maps, played)


class CaseRunner:
    """Everything one process needs to turn a case into its journal row: the explainers and the games, built once."""

    def __init__(self, model, *, methods, steps, replacement, batch_size: int, fast: bool, seed: int):
        self.model, self.seed = model, seed
        self.games = _Games(model, steps=steps, replacement=replacement, batch_size=batch_size, fast=fast)
        self.explainers = {name: make_explainer(name, model) for name in methods}

    def __call__(self, case: SaliencyCase, embedding: torch.Tensor, extra: dict) -> dict:
        with borrowed(self.model):  # once per case: the explainers' and games' own borrows are then free
            truth = causal_truth(self.model, [case])[0]
            return {"kind": case.kind, "index": case.index, "cue": case.cue, "token": case.token, **extra,
                    "causal": causal_row(case, truth), "methods": _explain_case(
                        self.model, case, embedding, self.explainers, truth, self.games, self.seed)}


class _WorkerRunner:
    """A ``CaseRunner`` factory for worker processes: the model is loaded again from its sources there (HF models
    carry hooks that do not pickle, and a reload reads the same files the run's fingerprint names)."""

    def __init__(self, arguments: dict, **settings):
        self.arguments, self.settings = arguments, settings

    def __call__(self) -> CaseRunner:
        return CaseRunner(JointModel.from_pretrained(**self.arguments), **self.settings)


def _runner_factory(model, workers: int | None, cases: int, settings: dict) -> tuple[Callable, int]:
    """The runner factory and the number of workers: several only for a CPU model loaded from files."""
    arguments = model.reload_arguments()
    if workers is None:
        workers = auto_workers(cases) if arguments is not None and model.device.type == "cpu" else 1
    if workers > 1 and arguments is None:
        raise ValueError(f"{workers} workers need a model loaded with JointModel.from_pretrained (each worker loads "
                         "it again from its files); this one was built in code: pass workers=1")
    if workers > 1:
        return _WorkerRunner(arguments, **settings), workers
    return partial(CaseRunner, model, **settings), workers


def _cue_work(model, seed: int, n_scenes: int, batch_size: int, log) -> list[tuple]:
    """Every prior's cue candidates, split by the model's answer into cue cases and controls."""
    tokenizer = model.processor.mllm_tokenizer
    yes_no = [tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no")]
    work = []
    for prior in defects.MLLM_PRIORS:
        candidates = cue_candidates(n_scenes, seed, prior)
        embedding = _encode(model, candidates, batch_size)
        answers = _next_token_logits(model, embedding, [c.prompt for c in candidates], batch_size)[:, yes_no]
        said_yes = (answers.softmax(-1)[:, 0] > 0.5).tolist()
        work += [(c if yes else replace(c, kind="control"), e, {})
                 for c, e, yes in zip(candidates, embedding, said_yes)]
        log(f"{prior.name}: {sum(said_yes)}/{n_scenes} cue candidates answered 'yes'")
    return work


def run_saliency_benchmark(model, *, n_scenes: int = 500, seed: int = 0, methods: Sequence[str] | None = None,
                           out_dir: str | Path | None = None, steps: int | None = 16, batch_size: int = 64,
                           fast: bool = True, workers: int | None = 1, progress: bool = True,
                           log: Callable[[str], None] | None = None) -> SaliencyReport:
    """Explain ``n_scenes`` object cases and each prior's cue cases among ``n_scenes`` candidates, every method.

    ``workers`` processes share the cases (None: one per CPU core when there are enough cases to repay their
    start-up, see ``_workers.auto_workers``); rows are journalled in case order whatever their number.
    """
    from tqdm.auto import tqdm

    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown explanation methods {unknown}; expected some of {', '.join(METHODS)}")
    if n_scenes < 1:
        raise ValueError(f"expected at least 1 scene; received {n_scenes}")
    started = time.perf_counter()
    log = log or (lambda message: None)
    objects = object_cases(n_scenes, seed)
    object_e = _encode(model, objects, batch_size)
    tokenizer = model.processor.mllm_tokenizer
    predicted = _next_token_logits(model, object_e, [c.prompt for c in objects], batch_size).argmax(-1)
    correct = [int(p) == tokenizer.convert_tokens_to_ids(c.token) for p, c in zip(predicted, objects)]
    log(f"{sum(correct)}/{n_scenes} object tokens correct")
    work = [(c, e, {"correct": ok}) for c, e, ok in zip(objects, object_e, correct)]
    work += _cue_work(model, seed, n_scenes, batch_size, log)
    steps = None if steps is None else min(steps, model.grid[0] * model.grid[1])
    settings = {"methods": methods, "steps": steps, "replacement": reference_token(model, seed),
                "batch_size": batch_size, "fast": fast, "seed": seed}
    config = {"scenes": n_scenes, "seed": seed, "methods": methods, "steps": steps, "pixel_steps": PIXEL_STEPS,
              "priors": [p.name for p in defects.MLLM_PRIORS]}
    with CaseJournal(out_dir, RECORDS, config) as journal:
        todo = [item for item in work if (item[0].kind, item[0].cue, item[0].index) not in journal.done]
        runner, workers = _runner_factory(model, workers, len(todo), settings)
        if workers > 1:
            log(f"{len(todo)} cases on {workers} worker processes")
        with case_rows(runner, todo, workers) as rows:
            for row in tqdm(rows, total=len(todo), disable=not progress, desc="saliency", unit="case"):
                journal.append(row)
        rows = journal.rows
    summary = summarise(rows, methods, first_cue=defects.CROSS_STAR.name)
    summary.details.update(correct_tokens=sum(correct), cue_candidates=n_scenes, seed=seed, steps=steps,
                           pixel_steps=None if steps is None else min(PIXEL_STEPS, steps),
                           pointing_tolerance_px=POINTING_TOLERANCE_PX, seconds=round(time.perf_counter() - started, 1))
    return summary
