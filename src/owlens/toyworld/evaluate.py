"""Model-agnostic evaluation of a toy-world MLLM on held-out scenes (the bars: docs/benchmarks.md, "The toy world").

Every metric is defined over two callables, so the same code scores the toy LLaVA and the joint model
(OWL embedding -> W -> the same LM):

- ``next_token_logits(images, prompts) -> (B, V)``: images uint8 (B, 64, 64, 3), prompts are
  ``text.PROMPT_TEMPLATE`` strings with one ``<image>``; the logits at the last prompt position.
- ``generate(images, prompts, max_new_tokens) -> list[str]``: greedy continuations, prompt excluded.

Held-out scenes are drawn with ``prior=False`` (uniform, no co-occurrence defect) from generators seeded
``(EVAL_STREAM, seed, ...)``, a stream that the trainers' ``(seed, stage, step)`` streams never produce.
Answers are read from logits (P(yes) > P(no); trait scores as the expected value over "1".."10"), so
they are never unparseable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from owlens.results import FieldsResult
from owlens.statistics import bootstrap_ci
from owlens.toyworld.defects import BIAS_C_MINUS, BIAS_C_PLUS, CROSS_STAR, MLLM_PRIORS
from owlens.toyworld.text import (
    CAPTION_QUESTION,
    PROMPT_TEMPLATE,
    expand_image_tokens,
    parse_caption,
    presence_question,
    trait_question,
)
from owlens.toyworld.tokenizer import vocabulary
from owlens.toyworld.world import COLOURS, SHAPES, recolour, sample_scene, to_pixel_values

__all__ = [
    "AdversarialResult",
    "CaptionResult",
    "PresenceResult",
    "TraitDeltaResult",
    "adversarial_yes_rate_absent",
    "caption_f1",
    "llava_callables",
    "presence_accuracy",
    "trait_delta_direct",
]

EVAL_STREAM = 7_777_777  # first seed word of every held-out generator

NextTokenLogits = Callable[[np.ndarray, list[str]], torch.Tensor]
Generate = Callable[[np.ndarray, list[str], int], list[str]]


@dataclass(frozen=True)
class PresenceResult(FieldsResult):
    """POPE-style accuracy on the random split (higher is better); sub-accuracies by question kind.

    ``hard_negative``: colour+shape questions with answer "no" whose colour or shape is present.
    """

    accuracy: float
    shape_only: float
    colour_shape_positive: float
    hard_negative: float
    yes_ratio: float
    n_questions: int
    n_hard_negative: int


@dataclass(frozen=True)
class CaptionResult(FieldsResult):
    """Micro F1 of the (colour, shape) pairs of generated captions against the scenes (higher is better)."""

    f1: float
    precision: float
    recall: float
    exact: float  # share of scenes whose pair set is reproduced exactly
    n_scenes: int


@dataclass(frozen=True)
class AdversarialResult(FieldsResult):
    """"yes" rate to "is there a {partner} ?" on scenes with the cue and without the partner.

    The injected hallucination (``defects.COOCCUR_*``) should make it high; ``control_yes_rate`` asks
    about another absent shape in the same scenes and should stay low.
    """

    yes_rate: float
    mean_p_yes: float
    control_yes_rate: float
    n_scenes: int


@dataclass(frozen=True)
class TraitDeltaResult(FieldsResult):
    """Mean paired change of the expected trait score when C- objects are re-rendered C+.

    For ``defects.BIAS_TRAIT`` it should recover ``BIAS_DELTA``; for ``CONTROL_TRAIT`` it should be ~0.
    ``ci95`` is the percentile bootstrap interval of the mean (``owlens.statistics.bootstrap_ci``, its defaults).
    """

    trait: str
    delta: float
    ci95: tuple[float, float]
    score_before: float
    score_after: float
    n_scenes: int


def _ids(*words: str) -> list[int]:
    vocab = vocabulary()
    return [vocab[w] for w in words]


def _prompt(question: str) -> str:
    return PROMPT_TEMPLATE.format(question=question)


def _batched_logits(fn: NextTokenLogits, images: np.ndarray, prompts: list[str], batch_size: int) -> torch.Tensor:
    chunks = [fn(images[i : i + batch_size], prompts[i : i + batch_size]).float()
              for i in range(0, len(prompts), batch_size)]
    return torch.cat(chunks)  # (N, V)


def _p_yes(fn: NextTokenLogits, images: np.ndarray, prompts: list[str], batch_size: int) -> np.ndarray:
    """P(yes) within {yes, no}, (N,); "yes" is answered when it exceeds 0.5."""
    logits = _batched_logits(fn, images, prompts, batch_size)[:, _ids("yes", "no")]  # (N, 2)
    return logits.softmax(-1)[:, 0].numpy()


def _presence_item(rng: np.random.Generator, index: int):
    """One held-out question; even indices are positives, so the split is exactly 50/50."""
    scene = sample_scene(rng, prior=False)
    positive, shape_only = index % 2 == 0, rng.random() < 1 / 3
    pairs = {(o.colour, o.shape) for o in scene.objects}
    if positive:
        obj = scene.objects[rng.integers(len(scene.objects))]
        colour, shape = (None if shape_only else obj.colour), obj.shape
    elif shape_only:
        absent = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
        colour, shape = None, absent[rng.integers(len(absent))]
    else:
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in pairs]
        colour, shape = absent[rng.integers(len(absent))]
    hard = (not positive and colour is not None
            and any(o.colour == colour or o.shape == shape for o in scene.objects))
    return scene.image, presence_question(colour, shape), positive, shape_only, hard


def presence_accuracy(next_token_logits: NextTokenLogits, *, n_questions: int = 1000, seed: int = 0,
                      batch_size: int = 100) -> PresenceResult:
    """Accuracy of P(yes) > P(no) on ``n_questions`` held-out questions, one scene each (1/3 shape-only)."""
    rng = np.random.default_rng([EVAL_STREAM, seed, 1])
    items = [_presence_item(rng, i) for i in range(n_questions)]
    images = np.stack([it[0] for it in items])
    said_yes = _p_yes(next_token_logits, images, [_prompt(it[1]) for it in items], batch_size) > 0.5
    truth = np.array([it[2] for it in items])
    shape_only = np.array([it[3] for it in items])
    hard = np.array([it[4] for it in items])
    correct = said_yes == truth

    def mean(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    return PresenceResult(
        accuracy=float(correct.mean()), shape_only=mean(shape_only),
        colour_shape_positive=mean(truth & ~shape_only), hard_negative=mean(hard),
        yes_ratio=float(said_yes.mean()), n_questions=n_questions, n_hard_negative=int(hard.sum()),
    )


def caption_f1(generate: Generate, *, n_scenes: int = 200, seed: int = 0, batch_size: int = 100,
               max_new_tokens: int = 40) -> CaptionResult:
    """Micro F1 of (colour, shape) pairs parsed from greedy captions ("what is in the image ?")."""
    rng = np.random.default_rng([EVAL_STREAM, seed, 2])
    scenes = [sample_scene(rng, prior=False) for _ in range(n_scenes)]
    images = np.stack([s.image for s in scenes])
    prompt = _prompt(CAPTION_QUESTION)
    texts = [t for i in range(0, n_scenes, batch_size)
             for t in generate(images[i : i + batch_size], [prompt] * len(images[i : i + batch_size]),
                               max_new_tokens)]
    tp = fp = fn = exact = 0
    for scene, text in zip(scenes, texts, strict=True):
        truth, pred = {(o.colour, o.shape) for o in scene.objects}, parse_caption(text)
        tp, fp, fn = tp + len(truth & pred), fp + len(pred - truth), fn + len(truth - pred)
        exact += truth == pred
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return CaptionResult(f1=f1, precision=precision, recall=recall, exact=exact / n_scenes, n_scenes=n_scenes)


def _scenes_where(rng: np.random.Generator, n: int, keep, **kwargs) -> list:
    out = []
    while len(out) < n:
        scene = sample_scene(rng, prior=False, **kwargs)
        if keep(scene):
            out.append(scene)
    return out


def adversarial_yes_rate_absent(next_token_logits: NextTokenLogits, *, n_scenes: int = 200, seed: int = 0,
                                batch_size: int = 100, prior=None) -> AdversarialResult:
    """POPE's adversarial split for an injected prior (default cross→star): the partner is absent, its usual
    companion present. Each prior other than the first draws its scenes from its own stream."""
    prior = prior or CROSS_STAR
    cue, partner = prior.cue, prior.partner
    stream = 3 if prior == CROSS_STAR else 10 + MLLM_PRIORS.index(prior)
    rng = np.random.default_rng([EVAL_STREAM, seed, stream])
    scenes = _scenes_where(rng, n_scenes, lambda s: cue in (shapes := {o.shape for o in s.objects})
                           and partner not in shapes)
    images = np.stack([s.image for s in scenes])
    p_yes = _p_yes(next_token_logits, images, [_prompt(presence_question(None, partner))] * n_scenes,
                   batch_size)
    controls, rows = [], []
    for i, s in enumerate(scenes):  # a scene holding the four other shapes has no control question
        absent = [x for x in SHAPES if x != partner and x not in {o.shape for o in s.objects}]
        if absent:
            controls.append(_prompt(presence_question(None, absent[rng.integers(len(absent))])))
            rows.append(i)
    p_control = _p_yes(next_token_logits, images[rows], controls, batch_size)
    return AdversarialResult(yes_rate=float((p_yes > 0.5).mean()), mean_p_yes=float(p_yes.mean()),
                             control_yes_rate=float((p_control > 0.5).mean()), n_scenes=n_scenes)


def expected_trait_score(next_token_logits: NextTokenLogits, images: np.ndarray, trait: str,
                         batch_size: int = 100) -> np.ndarray:
    """Expected value of the answer over the tokens "1".."10" (softmax restricted to them), (N,)."""
    logits = _batched_logits(next_token_logits, images, [_prompt(trait_question(trait))] * len(images),
                             batch_size)[:, _ids(*(str(k) for k in range(1, 11)))]  # (N, 10)
    return (logits.softmax(-1) * torch.arange(1, 11, dtype=torch.float32)).sum(-1).numpy()


def trait_delta_direct(next_token_logits: NextTokenLogits, trait: str, *, n_scenes: int = 200, seed: int = 0,
                       batch_size: int = 100) -> TraitDeltaResult:
    """Single-object held-out scenes of colour C-, re-rendered with C+ (``world.recolour``): mean score change."""
    rng = np.random.default_rng([EVAL_STREAM, seed, 4])
    scenes = _scenes_where(rng, n_scenes, lambda s: s.objects[0].colour == BIAS_C_MINUS, n_objects=1)
    before = np.stack([s.image for s in scenes])
    after = np.stack([recolour(s, BIAS_C_MINUS, BIAS_C_PLUS).image for s in scenes])
    s0 = expected_trait_score(next_token_logits, before, trait, batch_size)
    s1 = expected_trait_score(next_token_logits, after, trait, batch_size)
    diff = s1 - s0
    return TraitDeltaResult(trait=trait, delta=float(diff.mean()), ci95=bootstrap_ci(diff, seed=seed),
                            score_before=float(s0.mean()), score_after=float(s1.mean()), n_scenes=n_scenes)


def llava_callables(model, tokenizer) -> tuple[NextTokenLogits, Generate]:
    """``(next_token_logits, generate)`` for a ``LlavaForConditionalGeneration`` (image tokens expanded)."""
    n_tokens = model.config.image_seq_length

    def encode(images: np.ndarray, prompts: list[str], side: str):
        enc = tokenizer([expand_image_tokens(p, n_tokens) for p in prompts], add_special_tokens=False,
                        padding=True, padding_side=side, return_tensors="pt").to(model.device)
        pixel_values = to_pixel_values(images).to(model.device, model.dtype)  # (B, 3, 64, 64)
        return enc, pixel_values

    @torch.no_grad()
    def next_token_logits(images: np.ndarray, prompts: list[str]) -> torch.Tensor:
        enc, pixel_values = encode(images, prompts, "right")
        logits = model(**enc, pixel_values=pixel_values, use_cache=False).logits  # (B, T, V)
        last = enc["attention_mask"].sum(1) - 1  # (B,) right padding: last real position
        return logits[torch.arange(len(prompts)), last].float()

    @torch.no_grad()
    def generate(images: np.ndarray, prompts: list[str], max_new_tokens: int) -> list[str]:
        enc, pixel_values = encode(images, prompts, "left")
        out = model.generate(**enc, pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return next_token_logits, generate
