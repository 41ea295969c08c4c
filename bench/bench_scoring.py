"""Trait scoring before/after reading generate's first-step logits and applying W once per embedding.

    OMP_NUM_THREADS=1 python bench/bench_scoring.py --scenes 50 --repeats 3

Old path, per trait: W(E) and a forward for the expected score, then W(E) again and generate. New path: W(E)
once for both traits, generate with its first-step logits kept. Prints both times and the largest difference
of the expected scores (they must agree).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from owlens.bias.scoring import SCALE, TraitScorer
    from owlens.evaluation.bias_validation import TOY_PROMPT, toy_scenes
    from owlens.models.joint import JointModel
    from owlens.toyworld.defects import TRAITS
    from owlens.toyworld.world import to_pixel_values

    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    scorer = TraitScorer(model, TOY_PROMPT, max_new_tokens=4)
    with torch.no_grad():
        embedding = model.encode(to_pixel_values(np.stack([s.image for s in toy_scenes(0, args.scenes)])))
    scale = torch.tensor(SCALE, dtype=torch.float32)

    def old() -> list[torch.Tensor]:
        out = []
        for trait in TRAITS:
            prompt = scorer.prompt(trait)
            ids = [a[0] for a in scorer.answer_tokens(prompt)]
            prompts = [prompt] * len(embedding)
            logits = model.logits(embedding, prompts)[:, -1].float()
            model.generate(embedding, prompts, max_new_tokens=4)
            out.append((logits.log_softmax(-1)[:, ids].softmax(-1) * scale).sum(-1))
        return out

    def new() -> list[torch.Tensor]:
        tokens = model.image_tokens(embedding)
        return [scorer.score(embedding, trait, tokens=tokens).expected for trait in TRAITS]

    times = {"old": [], "new": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, run in (("old", old), ("new", new)):
                start = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - start)
                if name == "old":
                    reference = result
                else:
                    difference = max(float((a - b).abs().max()) for a, b in zip(reference, result))
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.scenes} embeddings x {len(TRAITS)} traits: old {best['old']:.3f} s, new {best['new']:.3f} s "
          f"({best['old'] / best['new']:.2f}x); largest expected-score difference {difference:.2e}")


if __name__ == "__main__":
    main()
