"""Toy-world validation of the bias measure (docs/design.md §5): it must recover the injected Δ and read ~0 elsewhere.

The toy world's training data carries a known bias (``toyworld.defects``): "how heavy is the shape ?" gets
+``BIAS_DELTA`` when the object is ``BIAS_C_PLUS`` (blue) rather than ``BIAS_C_MINUS`` (red), while
"how round is the shape ?" ignores colour. On held-out single-object red scenes we perturb E toward blue *as
OWL sees it* (by default through the state two OWL layers before E: ``TOY_PERTURBATION``) and read J's answers
on W(E'[:, 1:]). The same scenes re-rendered blue (``world.recolour``) give the ceiling: the change a perfect
perturbation could reach through this J (its own bias, as learnt).

Scenes are the ones ``toyworld.evaluate.trait_delta_direct`` draws for the same seed and count (same stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from owlens.bias.perturbation import Concept, encode_for
from owlens.bias.probe import BiasProbe
from owlens.bias.scoring import TraitScorer
from owlens.bias.spec import PerturbationSpec
from owlens.bias.stats import DEFAULT_STATISTICS, PairedDelta
from owlens.bias.summary import summarise
from owlens.toyworld.defects import BIAS_C_MINUS, BIAS_C_PLUS, BIAS_DELTA, BIAS_TRAIT, CONTROL_TRAIT, TRAITS
from owlens.toyworld.evaluate import EVAL_STREAM
from owlens.toyworld.text import owl_query
from owlens.toyworld.world import SHAPES, recolour, sample_scene, to_pixel_values

__all__ = ["E_PERTURBATION", "QUERY_MODES", "TOY_PERTURBATION", "TOY_PROMPT", "BiasValidation", "export_toy_images",
           "toy_concept", "toy_scenes", "validate_bias"]

TOY_PROMPT = "from one to ten , how {X} is the shape ?"  # ``toyworld.text.trait_question``'s wording
QUERY_MODES = ("colour", "shape")
# The semantic null: a colour "heavy" does not depend on (it adds Δ for blue only), moved to by the same attack.
NULL_COLOUR = "green"
# The documented toy setting (docs/benchmarks.md, "Bias assessment"): PGD in an L2 budget of 33 on the state
# entering OWL's encoder layer 1, two layers before E (``layer``), 10 steps, against the boxes where OWL sees red
# with presence >= 0.1 x the image's best (region 0.1: about 5 of 64 boxes, the object's extent). Why upstream:
# the toy MLLM reads a colour from 6-8 of E's tokens, and a δ on E that reaches them only by pushing the two
# tokens OWL's red boxes sit on far from any image's tokens moved the colour-blind question as well
# (bench/diagnose_bias_reach.py). Chosen on tuning seeds 5 and 6, measured on 0-3.
TOY_PERTURBATION = PerturbationSpec(method="pgd", epsilon=33.0, norm="l2", steps=10, region=0.1, layer=1)
# The setting before, on E itself: L2 22 (about one E token's norm), region 0.5. It recovered +3.5 to +3.7 of the
# +4 on the first shipped weights and +1.6 to +1.9 on the current ones (`--layer E --epsilon 22 --region 0.5`).
# The paper's FGSM (PerturbationSpec(), ε = 1 over all of E) swaps OWL on 88% of the scenes but moves the MLLM's
# answer by +0.15 to +0.3 of the +4.
E_PERTURBATION = PerturbationSpec(method="pgd", epsilon=22.0, norm="l2", steps=10, region=0.5)


def toy_concept(colour: str, shape: str | None = None) -> Concept:
    """A colour as OWL was trained to read it: all five "a photo of a {colour} {shape}" (or one shape's)."""
    return Concept(colour, tuple(owl_query(colour, s) for s in ((shape,) if shape else SHAPES)))


def toy_scenes(seed: int, n_scenes: int) -> list:
    """Held-out single-object scenes of colour C−: the stream and filter of ``trait_delta_direct``."""
    rng = np.random.default_rng([EVAL_STREAM, seed, 4])
    scenes = []
    while len(scenes) < n_scenes:
        scene = sample_scene(rng, prior=False, n_objects=1)
        if scene.objects[0].colour == BIAS_C_MINUS:
            scenes.append(scene)
    return scenes


def export_toy_images(folder: str | Path, seed: int, n_scenes: int) -> list[Path]:
    """Write the validation scenes as PNGs (``folder/0000.png``...) for ``examples/bias/toy.yaml``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.png" for i in range(n_scenes)]
    for path, scene in zip(paths, toy_scenes(seed, n_scenes)):
        Image.fromarray(scene.image).save(path)
    return paths


def _figure(delta: PairedDelta) -> dict:
    # The toy validation's own JSON names the interval "ci" (its published outputs do); the figures are the same.
    figure = delta.to_dict()
    return {"delta": figure["delta"], "ci": figure["ci95"], "p_value": figure["p_value"], "n": figure["n"]}


@dataclass(frozen=True)
class BiasValidation:
    """The toy validation's figures (all paired deltas of J's expected 1-10 score, after − before).

    biased: heavy (the injected bias) under the adversarial perturbation; control: round under it;
    random_control: heavy under the random perturbation of the same norms; identity_control: heavy under
    the identity swap C− → C− (``IdentityPerturbation``); ceiling_*: heavy / round when the scene is re-rendered
    C+ instead (no perturbation).
    owl_swap_success: share of images where OWL's presence for C+ exceeds C−'s after the perturbation.
    summary: the full ``summarise`` output (parsed-integer figures, norms, presences) for the one group.
    """

    injected_delta: float
    biased: dict
    control: dict
    random_control: dict
    identity_control: dict
    ceiling_biased: dict
    ceiling_control: dict
    owl_swap_success: float
    settings: dict
    summary: dict = field(repr=False)
    # heavy under the adversarial perturbation minus heavy under each control, image by image: the bias net of
    # what merely moving E does, with the bootstrap CI of that paired difference
    net_of_random: dict = field(default_factory=dict)
    net_of_identity: dict = field(default_factory=dict)
    # heavy under the random δ OWL's concept logits do not read (same tokens and L2), and under the semantic
    # null swap red → NULL_COLOUR (heavy does not depend on it: truth 0), each also net of the bias
    orthogonal_control: dict = field(default_factory=dict)
    null_control: dict = field(default_factory=dict)
    net_of_orthogonal: dict = field(default_factory=dict)
    net_of_null: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"injected_delta": self.injected_delta, "biased": self.biased, "control": self.control,
                "random_control": self.random_control, "identity_control": self.identity_control,
                "net_of_random": self.net_of_random, "net_of_identity": self.net_of_identity,
                "orthogonal_control": self.orthogonal_control, "null_control": self.null_control,
                "net_of_orthogonal": self.net_of_orthogonal, "net_of_null": self.net_of_null,
                "ceiling": {"biased": self.ceiling_biased, "control": self.ceiling_control},
                "owl_swap_success": self.owl_swap_success, "settings": self.settings, "summary": self.summary}


def _records(model, probe: BiasProbe, scenes: list, queries: str, batch_seed: int) -> list[dict]:
    layer = probe.perturber.layer
    embedding, state = encode_for(model, to_pixel_values(np.stack([s.image for s in scenes])), layer)  # (B, 1+N, d)
    with torch.no_grad():
        rerender = model.encode(to_pixel_values(np.stack([recolour(s, BIAS_C_MINUS, BIAS_C_PLUS).image
                                                          for s in scenes])))
    subsets = {None: list(range(len(scenes)))} if queries == "colour" else {
        shape: [i for i, s in enumerate(scenes) if s.objects[0].shape == shape]
        for shape in {s.objects[0].shape for s in scenes}}
    records: list[dict | None] = [None] * len(scenes)
    for shape, rows in subsets.items():
        assessed = probe.assess(embedding[rows], toy_concept(BIAS_C_MINUS, shape), toy_concept(BIAS_C_PLUS, shape),
                                TRAITS, batch_seed=batch_seed, extra={"rerender": rerender[rows]},
                                null=toy_concept(NULL_COLOUR, shape), state=None if state is None else state[rows])
        for i, record in zip(rows, assessed):
            records[i] = record
    return records


def validate_bias(model, *, seed: int = 0, n_scenes: int = 200, perturbation: PerturbationSpec | None = None,
                  queries: str = "colour", batch_size: int = 50, max_new_tokens: int = 4,
                  progress: bool = False) -> BiasValidation:
    """Run the bias measure on ``n_scenes`` held-out red scenes; see ``BiasValidation``."""
    from tqdm.auto import tqdm

    if queries not in QUERY_MODES:
        raise ValueError(f"unknown query mode {queries!r}; expected one of {QUERY_MODES}")
    perturbation = perturbation or TOY_PERTURBATION
    probe = BiasProbe(model, perturbation.build(model), TraitScorer(model, TOY_PROMPT, max_new_tokens=max_new_tokens),
                      random_seed=seed)
    scenes, records = toy_scenes(seed, n_scenes), []
    for index in tqdm(range(0, n_scenes, batch_size), disable=not progress, desc="bias toy", unit="batch"):
        batch = _records(model, probe, scenes[index:index + batch_size], queries, index // batch_size)
        records += [{"group": "toy", "image": f"{index + i:04d}", "status": "ok", **r} for i, r in enumerate(batch)]
    statistics = {**DEFAULT_STATISTICS, "seed": seed}
    summary = summarise(records, TRAITS, ["toy"], statistics=statistics).groups["toy"]
    biased, control = summary.traits[BIAS_TRAIT].conditions, summary.traits[CONTROL_TRAIT].conditions
    net = {name: _figure(figures.expected) for name, figures in summary.net[BIAS_TRAIT].items()}

    return BiasValidation(
        net_of_random=net["random"], net_of_identity=net["identity"], net_of_orthogonal=net["orthogonal"],
        net_of_null=net["null"], orthogonal_control=_figure(biased["orthogonal"].expected),
        null_control=_figure(biased["null"].expected),
        injected_delta=float(BIAS_DELTA), biased=_figure(biased["adversarial"].expected),
        control=_figure(control["adversarial"].expected), random_control=_figure(biased["random"].expected),
        identity_control=_figure(biased["identity"].expected),
        ceiling_biased=_figure(biased["rerender"].expected),
        ceiling_control=_figure(control["rerender"].expected),
        owl_swap_success=summary.perturbations["adversarial"].swap_rate,
        settings={"seed": seed, "n_scenes": n_scenes, "queries": queries, "perturbation": perturbation.to_dict(),
                  "prompt_template": TOY_PROMPT, "statistics": statistics},
        summary=summary.to_json())
