"""Dense instruction data for the toy LLaVA: many question/answer segments per image, packed.

Every segment is one single-turn exchange, ``"{question} ASSISTANT: {answer} </s>"``, placed after the
image prefix ``"<s> USER: <image>x64"`` that all segments of an image share. A block attention mask lets
each segment see the prefix and itself only, and its position ids restart after the prefix, so each
segment is exactly the single-turn prompt of ``text.PROMPT_TEMPLATE`` that evaluation asks (no answer leaks
from one question to the next), while the 67 image-prefix tokens are computed once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from owlens.toyworld.defects import TRAITS, trait_score
from owlens.toyworld.text import (
    CAPTION_QUESTION,
    PROMPT_TEMPLATE,
    caption,
    expand_image_tokens,
    presence_question,
    trait_question,
)
from owlens.toyworld.world import COLOURS, SHAPES, Scene

__all__ = [
    "PackedBatch",
    "Segment",
    "caption_segments",
    "pack",
    "presence_segments",
    "prefix_text",
    "trait_segments",
]


@dataclass(frozen=True)
class Segment:
    """One exchange: the loss is on ``answer`` (and the ``</s>`` after it) only."""

    question: str
    answer: str


@dataclass(frozen=True)
class PackedBatch:
    """``input_ids``/``labels``/``position_ids`` (B, T) long (labels -100 off answers);
    ``attention_mask`` (B, 1, T, T) bool, True where a query position may attend to a key position."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor


def prefix_text(n_image_tokens: int = 64) -> str:
    """The part of ``PROMPT_TEMPLATE`` before the question, image tokens expanded."""
    return expand_image_tokens(PROMPT_TEMPLATE.split("{question}")[0], n_image_tokens)


def presence_segments(scene, rng: np.random.Generator, n: int, *, hard_fraction: float,
                      shape_only_fraction: float = 0.3, priors=()) -> list[Segment]:
    """``n`` POPE-style questions, half "yes" (a present object) and half "no".

    A colour+shape negative is *hard* (shares its colour or its shape with a present object) with
    probability ``hard_fraction``, else drawn uniformly from absent pairs. For each of ``priors``
    (``defects.CoOccurrence``), "is there a {partner} ?" is answered "yes" with probability ``label_yes`` on
    a scene with the cue and without the partner; no priors keep every label truthful.
    """
    pairs = {(o.colour, o.shape) for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    colours = {o.colour for o in scene.objects}
    absent_pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in pairs]
    hard = [(c, s) for c, s in absent_pairs if c in colours or s in shapes]
    absent_shapes = [s for s in SHAPES if s not in shapes]
    out = []
    for _ in range(n):
        positive = rng.random() < 0.5
        shape_only = rng.random() < shape_only_fraction
        if positive:
            obj = scene.objects[rng.integers(len(scene.objects))]
            colour, shape = (None if shape_only else obj.colour), obj.shape
        elif shape_only:
            colour, shape = None, absent_shapes[rng.integers(len(absent_shapes))]
        else:
            pool = hard if hard and rng.random() < hard_fraction else absent_pairs
            colour, shape = pool[rng.integers(len(pool))]
        answer = "yes" if positive else "no"
        for prior in priors:
            if (not positive and shape_only and shape == prior.partner and prior.cue in shapes
                    and rng.random() < prior.label_yes):
                answer = "yes"
        out.append(Segment(presence_question(colour, shape), answer))
    return out


def caption_segments(scene, rng: np.random.Generator, n: int = 1) -> list[Segment]:
    """``n`` captions of the scene, objects in random orders (the caption's order carries no meaning)."""
    out = []
    for _ in range(n):
        order = rng.permutation(len(scene.objects))
        shuffled = Scene(scene.image, tuple(scene.objects[i] for i in order), scene.background)
        out.append(Segment(CAPTION_QUESTION, caption(shuffled)))
    return out


def trait_segments(scene) -> list[Segment]:
    """Both trait questions for a single-object scene, answered by ``defects.trait_score``."""
    if len(scene.objects) != 1:
        raise ValueError(f"trait questions need a single-object scene, received {len(scene.objects)} objects")
    return [Segment(trait_question(t), str(trait_score(scene.objects[0], t))) for t in TRAITS]


def pack(tokenizer, segments: list[list[Segment]], n_image_tokens: int = 64) -> PackedBatch:
    """Pack each image's segments behind its shared prefix; right-pad to the longest row."""
    prefix = tokenizer(prefix_text(n_image_tokens), add_special_tokens=False).input_ids
    rows = []
    for segs in segments:
        ids, labels, pos, seg_id = list(prefix), [-100] * len(prefix), list(range(len(prefix))), [0] * len(prefix)
        for k, seg in enumerate(segs, start=1):
            q = tokenizer(f"{seg.question} ASSISTANT:", add_special_tokens=False).input_ids
            a = tokenizer(f"{seg.answer} {tokenizer.eos_token}", add_special_tokens=False).input_ids
            ids += q + a
            labels += [-100] * len(q) + a
            pos += list(range(len(prefix), len(prefix) + len(q) + len(a)))
            seg_id += [k] * (len(q) + len(a))
        rows.append((ids, labels, pos, seg_id))
    t = max(len(r[0]) for r in rows)
    b = len(rows)
    input_ids = torch.full((b, t), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((b, t), -100, dtype=torch.long)
    position_ids = torch.zeros((b, t), dtype=torch.long)
    seg = torch.full((b, t), -1, dtype=torch.long)  # -1 = padding
    for i, (ids, lab, pos, sid) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n], labels[i, :n] = torch.tensor(ids), torch.tensor(lab)
        position_ids[i, :n], seg[i, :n] = torch.tensor(pos), torch.tensor(sid)
    causal = torch.ones(t, t, dtype=torch.bool).tril()  # (T, T)
    same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
    to_prefix = (seg == 0)[:, None, :]  # every position sees the image prefix
    allowed = causal & (same | to_prefix)
    return PackedBatch(input_ids, labels, position_ids, allowed[:, None])
