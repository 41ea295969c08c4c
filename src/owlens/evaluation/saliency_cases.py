"""What the saliency benchmark explains on held-out toy scenes, and the truth each explanation is held to.

**Object cases** (plausibility and faithfulness). The token is the shape word of one named object, explained
the paper's way: the caption prompt ("what is in the image ?") teacher-forced with the scene's truthful caption
up to that object's shape word ("... ASSISTANT: a large red"), token = the shape ("circle"), GA's default
query "a photo of a circle". The object is drawn among those whose shape is unique in the scene, because that
default query names a shape, not an instance: with two circles the truth would be ambiguous. Truth: the object's
mask and box. The token is *correct* when it is the model's greedy next token there.

**Cue cases** (the injected hallucinations, one stream per prior of ``defects.MLLM_PRIORS``). Held-out scenes
with the cue and no partner (for cross→star: a cross and no star) on which the model answers "yes" to "is there
a star ?" (P(yes) > P(no), as ``toyworld.evaluate`` reads answers). The explained token is that "yes", the
output that *is* the hallucination, with the concept the question names as the detector query ("a photo of a
star", GA's documented override; the default template would query "a photo of a yes"). We do not teacher-force
"star" into a caption instead: the model did not say it there, so its logit would explain a token it never
produced. Truth: the cue objects (every cross in the scene), which the defect makes the cause; the causal truth
of ``evaluation.causal`` checks it case by case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from owlens.toyworld import defects
from owlens.toyworld.evaluate import EVAL_STREAM
from owlens.toyworld.text import CAPTION_QUESTION, PROMPT_TEMPLATE, caption, owl_query, presence_question
from owlens.toyworld.world import Scene, sample_scene

__all__ = ["SaliencyCase", "cue_candidates", "object_cases", "reference_token", "STREAMS"]

# Third seed word of each held-out generator (evaluate.py uses 1-4): scenes no other evaluation draws.
# Each injected prior has its own cue stream, so adding a prior leaves the others' cases unchanged.
STREAMS = {"object": 40, "cue": 41, "reference": 42, "cue:square→triangle": 43}


@dataclass(frozen=True, eq=False)
class SaliencyCase:
    """One token to explain on one scene.

    kind: "object", "cue", or "control" (a cue candidate the model answered "no"). index: its place in its
    stream. cue: the prior a cue or control case tests ("cross→star"), None for object cases. prompt: full
    prompt text, teacher-forced text included, ending where the token is predicted.
    token, query: the target (query None: GA's template). truth_mask: bool (64, 64). truth_boxes: (G, 4) pixel
    corners x0, y0, x1, y1 (exclusive), one per object.
    """

    kind: str
    index: int
    scene: Scene
    prompt: str
    token: str
    query: str | None
    truth_mask: np.ndarray
    truth_boxes: np.ndarray
    cue: str | None = None


def _object_case(scene: Scene, rng: np.random.Generator, index: int) -> SaliencyCase | None:
    shapes = [o.shape for o in scene.objects]
    unique = [i for i, shape in enumerate(shapes) if shapes.count(shape) == 1]
    if not unique:
        return None
    chosen = unique[int(rng.integers(len(unique)))]
    words = caption(scene).split()
    # Shape words appear in the caption only as the objects' nouns, in scene order.
    at = [k for k, word in enumerate(words) if word in shapes][chosen]
    obj = scene.objects[chosen]
    prompt = " ".join([PROMPT_TEMPLATE.format(question=CAPTION_QUESTION), *words[:at]])
    return SaliencyCase("object", index, scene, prompt, obj.shape, None, obj.mask.copy(),
                        np.array([obj.box_xyxy], dtype=np.float64))


def object_cases(n_scenes: int, seed: int) -> list[SaliencyCase]:
    """``n_scenes`` object cases from the held-out stream (a scene with no unique shape is redrawn)."""
    rng = np.random.default_rng([EVAL_STREAM, seed, STREAMS["object"]])
    cases = []
    while len(cases) < n_scenes:
        case = _object_case(sample_scene(rng, prior=False), rng, len(cases))
        if case is not None:
            cases.append(case)
    return cases


def cue_candidates(n_scenes: int, seed: int, prior: defects.CoOccurrence = defects.CROSS_STAR) -> list[SaliencyCase]:
    """``n_scenes`` held-out scenes with the prior's cue and without its partner, as cases; keep those answered
    "yes". The first prior keeps the stream it always had; every other prior draws from its own."""
    stream = STREAMS["cue"] if prior == defects.CROSS_STAR else STREAMS[f"cue:{prior.name}"]
    rng = np.random.default_rng([EVAL_STREAM, seed, stream])
    question = PROMPT_TEMPLATE.format(question=presence_question(None, prior.partner))
    cases = []
    while len(cases) < n_scenes:
        scene = sample_scene(rng, prior=False)
        shapes = {o.shape for o in scene.objects}
        if prior.cue in shapes and prior.partner not in shapes:
            cues = [o for o in scene.objects if o.shape == prior.cue]
            cases.append(SaliencyCase("cue", len(cases), scene, question, "yes", owl_query(None, prior.partner),
                                      np.any([o.mask for o in cues], axis=0),
                                      np.array([o.box_xyxy for o in cues], dtype=np.float64), prior.name))
    return cases


def reference_token(model, seed: int, n_scenes: int = 64) -> torch.Tensor:
    """The mean patch token of E over ``n_scenes`` held-out scenes (d,): what deletion/insertion put in."""
    rng = np.random.default_rng([EVAL_STREAM, seed, STREAMS["reference"]])
    images = [sample_scene(rng, prior=False).pil() for _ in range(n_scenes)]
    with torch.no_grad():
        embedding = model.encode_images(images)  # (n, 1+N, d)
    return embedding[:, 1:].mean((0, 1))
