"""How many of E's tokens carry the colour the toy MLLM reads, against how many OWL's region covers.

For held-out red scenes (the bias validation's) and the same scenes re-rendered blue, E's tokens are swapped in
from the re-render, the k that differ most first, and J is asked the biased ("heavy", injected +4 for blue) and
the colour-blind ("round") questions. A perturbation of E that only reaches OWL's region cannot move "heavy"
further than swapping those tokens for real blue ones does; this is what chose the upstream perturbation
(docs/benchmarks.md, "Bias assessment").

    OMP_NUM_THREADS=1 python bench/diagnose_bias_reach.py --seed 5 --scenes 100
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from owlens.bias.perturbation import query_embeds_for
from owlens.bias.region import owl_region
from owlens.bias.scoring import TraitScorer
from owlens.evaluation.bias_validation import TOY_PROMPT, toy_concept, toy_scenes
from owlens.models import JointModel
from owlens.toyworld.defects import BIAS_C_MINUS, BIAS_C_PLUS, BIAS_TRAIT, CONTROL_TRAIT
from owlens.toyworld.world import recolour, to_pixel_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=5, help="a tuning seed, not a reported one (default: 5)")
    parser.add_argument("--scenes", type=int, default=100)
    args = parser.parse_args()

    model = JointModel.from_pretrained()
    scorer = TraitScorer(model, TOY_PROMPT, max_new_tokens=0)
    scenes = toy_scenes(args.seed, args.scenes)
    with torch.no_grad():
        red = model.encode(to_pixel_values(np.stack([s.image for s in scenes])))  # (B, 1+N, d)
        blue = model.encode(to_pixel_values(np.stack([recolour(s, BIAS_C_MINUS, BIAS_C_PLUS).image
                                                      for s in scenes])))
    base = {t: scorer.score(red, t).expected for t in (BIAS_TRAIT, CONTROL_TRAIT)}

    def report(name: str, swapped: torch.Tensor) -> None:  # swapped: (B, N) patch tokens taken from the re-render
        mixed = red.clone()
        mixed[:, 1:][swapped] = blue[:, 1:][swapped]
        moved = [float((scorer.score(mixed, t).expected - base[t]).mean()) for t in (BIAS_TRAIT, CONTROL_TRAIT)]
        print(f"{name:34s} {swapped.float().sum(1).mean():5.1f} tokens   heavy {moved[0]:+.2f}   round {moved[1]:+.2f}")

    difference = (blue - red)[:, 1:].norm(dim=-1)  # (B, N)
    order = difference.argsort(dim=1, descending=True)
    print(f"seed {args.seed}, {args.scenes} red scenes; whole re-render:")
    report("all tokens", torch.ones_like(difference, dtype=torch.bool))
    for k in (1, 2, 3, 4, 6, 8, 16):
        chosen = torch.zeros_like(difference, dtype=torch.bool).scatter(1, order[:, :k], True)
        report(f"the {k} that differ most", chosen)
    minus, plus = toy_concept(BIAS_C_MINUS), toy_concept(BIAS_C_PLUS)
    queries = query_embeds_for(model, (minus, plus))
    for threshold in (0.5, 0.2, 0.1):
        report(f"OWL's region {threshold}", owl_region(model, red, queries, len(minus.queries), threshold))


if __name__ == "__main__":
    main()
