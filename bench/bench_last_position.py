"""Benchmark the LM's last-position tail against the full forward, on the shipped toy LLaVA, in one run.

    speedup             full forward (logits_to_keep=1) / tail (last decoder layer at the read position only)
    max_abs_difference  largest difference of the logits the two give

    python bench/bench_last_position.py --rows 32 --repeats 20 --json [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from owlens.models.joint import JointModel
from owlens.toyworld.text import CAPTION_QUESTION, PROMPT_TEMPLATE
from owlens.toyworld.world import sample_scene


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocations and kernel choice
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="rows per forward (the evaluation's chunk)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    images = [sample_scene(rng).pil() for _ in range(args.rows)]
    prompt = PROMPT_TEMPLATE.format(question=CAPTION_QUESTION) + " a large red"
    with torch.no_grad():
        embeds, mask = model.inputs_embeds(model.encode_images(images), [prompt] * args.rows)
        llava = model.language.llava
        full = llava(inputs_embeds=embeds, logits_to_keep=1, use_cache=False).logits[:, -1]
        tail = model.language.last_logits(embeds)
        full_s = _timed(lambda: llava(inputs_embeds=embeds, logits_to_keep=1, use_cache=False), args.repeats)
        tail_s = _timed(lambda: model.language.last_logits(embeds), args.repeats)
    result = {"rows": args.rows, "tokens": embeds.shape[1], "speedup": round(full_s / tail_s, 2),
              "max_abs_difference": float((full - tail).abs().max()), "threads": torch.get_num_threads()}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
