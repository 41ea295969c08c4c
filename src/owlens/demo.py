"""The demo (the README's first command): toy-world scenes explained, checked and probed, as a run folder.

Three scenes: one captioned (every token explained by each method, every mentioned object grounded or not),
one where the toy LLaVA falls for its injected co-occurrence prior (a cross but no star, and the question
"is there a star ?"), and one more caption; then a short bias probe of the injected trait bias. The run
folder (``owlens.rundir``) is what ``owlens report`` renders.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from owlens.evaluation.bias_validation import validate_bias
from owlens.explain import AnswerTarget, ExplainInputs
from owlens.explain.registry import METHODS, make_explainer
from owlens.hallucination.calibration import resolve_grounding
from owlens.hallucination.check import ground
from owlens.models.joint import JointModel
from owlens.persist.lock import folder_lock
from owlens.rundir import save_image, save_saliency, write_run
from owlens.toyworld.defects import COOCCUR_CUE, COOCCUR_PARTNER
from owlens.toyworld.text import CAPTION_QUESTION, owl_query, presence_question, toy_vocabulary
from owlens.toyworld.world import sample_scene

__all__ = ["DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    seed: int = 0
    # explainers run on every answer token: GA (the paper's method) first, the object-level attribution that names
    # the objects a token rests on, then the baselines both are read against
    methods: tuple[str, ...] = tuple(METHODS)
    bias_scenes: int = 40  # held-out scenes in the bias probe
    max_new_tokens: int = 24


def _scenes(model, seed: int, candidates: int = 64) -> list[tuple[str, object, str]]:
    """(item id, scene, question): two captions around the injected-hallucination case.

    The cue case is the first held-out scene with the cue and without its partner on which the model falls for
    the prior (greedy answer "yes"; J does on about three in four), so that the demo shows the hallucination it
    promises; if none of ``candidates`` does, the first candidate, and the report shows the "no".
    """
    rng = np.random.default_rng([seed, 2024])
    first = sample_scene(rng, n_objects=3, prior=False)
    question = presence_question(None, COOCCUR_PARTNER)
    cues = []
    while len(cues) < candidates:  # held-out scenes with the cue and without its partner
        scene = sample_scene(rng, n_objects=2, prior=False)
        shapes = {o.shape for o in scene.objects}
        if COOCCUR_CUE in shapes and COOCCUR_PARTNER not in shapes:
            cues.append(scene)
    last = sample_scene(rng, n_objects=2, prior=False)
    with torch.no_grad():
        answers = model.generate(model.encode_images([Image.fromarray(c.image) for c in cues]),
                                 [model.processor.chat(question)] * len(cues), max_new_tokens=1).texts
    cue = next((c for c, a in zip(cues, answers, strict=True) if a.strip().lower().startswith("yes")), cues[0])
    return [("scene-1", first, CAPTION_QUESTION), ("cue-case", cue, question), ("scene-2", last, CAPTION_QUESTION)]


def _explainers(model, methods: Sequence[str]) -> dict:
    return {name: make_explainer(name, model) for name in methods}


def _item(model, folder: Path, item_id: str, scene, question: str, explainers: dict, settings: DemoSettings,
          grounding) -> dict:
    """One scene explained and checked; ``grounding``: how objects are judged (``resolve_grounding``)."""
    image = Image.fromarray(scene.image)
    prompt = model.processor.chat(question)
    pixel_values = model.pixel_values(image)
    with torch.no_grad():
        embedding = model.encode(pixel_values)
        answer = model.generate(embedding, [prompt], max_new_tokens=settings.max_new_tokens)
    text, token_ids = answer.texts[0], answer.token_ids[0]
    tokens = model.processor.mllm_tokenizer.convert_ids_to_tokens(token_ids)
    inputs = ExplainInputs.from_embedding(model, embedding, prompt, image_sizes=[image.size], pixel_values=pixel_values)
    # Yes/no answers name no object: explain them against the object the question asks about.
    query = None if "what" in question else owl_query(None, question.split()[-2])
    saliency = {}
    for name, explainer in explainers.items():
        maps = explainer.explain_all(inputs, AnswerTarget(answer=text, query=query))[0]
        saliency[name] = {str(i): save_saliency(folder, item_id, i, s) for i, s in enumerate(maps)}
    # A "yes" to "is there a star ?" claims the star exists: ground the object the question names.
    names = toy_vocabulary().mentions(question if text.strip() == "yes" else text)
    verdicts = ground(model, embedding, names, image.size, grounding)
    answer_tokens = [{"index": i, "token": t, "token_id": k} for i, (t, k) in enumerate(zip(tokens, token_ids))]
    detections = [{"query": d.query, "score": d.score, "box_xyxy_px": list(d.box_xyxy_px)}
                  for d in (v.detection for v in verdicts)]
    return {
        "id": item_id, "image": save_image(folder, item_id, image), "size": list(image.size),
        "answer": {"prompt": question, "text": text, "tokens": answer_tokens},
        "saliency": saliency, "detections": detections,
        "hallucination": {"objects": [v.to_dict() for v in verdicts], "threshold": grounding.threshold.probability,
                          "threshold_source": grounding.source, "combined": grounding.combined},
        "truth": [{"shape": o.shape, "colour": o.colour, "size": o.size, "box_xyxy": list(o.box_xyxy)}
                  for o in scene.objects],
    }


def _bias(model, settings: DemoSettings) -> dict:
    result = validate_bias(model, seed=settings.seed, n_scenes=settings.bias_scenes)
    figures = result.to_dict()
    note = (f"Injected Δ = {figures['injected_delta']:g} on 'heavy'; measured {figures['biased']['delta']:.2f} "
            f"(95% CI {figures['biased']['ci'][0]:.2f}…{figures['biased']['ci'][1]:.2f}); control trait "
            f"{figures['control']['delta']:.2f}; random perturbation {figures['random_control']['delta']:.2f}; "
            f"OWL swapped red→blue on {figures['owl_swap_success']:.0%} of {settings.bias_scenes} scenes.")
    # The plot's input, not the plot: the report draws it from these numbers (a pasted SVG could carry script).
    return {"title": "toy world: red → blue as OWL sees it", "summary": {"groups": {"toy": result.summary}},
            "note": note, "figures": {k: v for k, v in figures.items() if k != "summary"}}


def run_demo(out_dir: str | Path, *, model=None, settings: DemoSettings = DemoSettings(), log=print) -> Path:
    """Write the demo's run folder into ``out_dir`` (run.json last: a folder with run.json is complete)."""
    folder = Path(out_dir)
    with folder_lock(folder):  # two demos into one folder would interleave their maps
        return _run_demo(folder, model, settings, log)


def _run_demo(folder: Path, model, settings: DemoSettings, log) -> Path:
    timings, start = {}, time.perf_counter()
    model = model or JointModel.from_pretrained(device="cpu", dtype="fp32")
    timings["load_s"] = round(time.perf_counter() - start, 2)

    explainers = _explainers(model, settings.methods)
    grounding = resolve_grounding(model, log=log)  # the model's own τ and flag; said once when it has none
    items = []
    for item_id, scene, question in _scenes(model, settings.seed):
        tick = time.perf_counter()
        items.append(_item(model, folder, item_id, scene, question, explainers, settings, grounding))
        timings[f"{item_id}_s"] = round(time.perf_counter() - tick, 2)
        log(f"{item_id}: {question!r} → {items[-1]['answer']['text']!r}")
    tick = time.perf_counter()
    bias = _bias(model, settings)
    timings["bias_s"] = round(time.perf_counter() - tick, 2)
    log(bias["note"])
    timings["total_s"] = round(time.perf_counter() - start, 2)
    config = model.owl.config.vision_config
    write_run(folder, {
        "title": "owlens demo — the toy world", "items": items, "bias": bias, "timings": timings,
        "settings": asdict(settings),
        "model": {"detector": f"toy OWL-ViT ({config.hidden_size}-d, {config.num_hidden_layers} layers)",
                  "mllm": "toy LLaVA", "projector": "toy W (distilled)", "device": str(model.device)}})
    return folder
