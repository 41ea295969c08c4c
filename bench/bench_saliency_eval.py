"""Benchmark the saliency evaluation: the fast path (every method's games of a case played together) against the
plain path (each map's games one at a time), on the same cases in one run, and where the time of a case goes.

    per_case_s          seconds per case, fast and plain (object and cue cases of seed ``--seed``)
    speedup             plain / fast on the same cases: the ratio is what to compare across machines
    speedup_workers     with --workers N: the fast path in one process / on N worker processes
    max_abs_difference  largest difference between the two paths over every figure of the report
    profile             with --profile: the share of the fast path's time in explainers, games, causal truth

    python bench/bench_saliency_eval.py --scenes 6 --seed 11 --json [--threads 2] [--profile]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from owlens.evaluation import saliency_benchmark
from owlens.models.joint import JointModel


def _numbers(payload, prefix=""):
    """Every float of a nested report, keyed by its path."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            yield from _numbers(value, f"{prefix}.{key}")
    elif isinstance(payload, list):
        for index, value in enumerate(payload):
            yield from _numbers(value, f"{prefix}[{index}]")
    elif isinstance(payload, float):
        yield prefix, payload


def _run(model, scenes: int, seed: int, fast: bool, workers: int = 1) -> tuple[dict, float, int]:
    start = time.perf_counter()
    report = saliency_benchmark.run_saliency_benchmark(model, n_scenes=scenes, seed=seed, fast=fast,
                                                       workers=workers, progress=False).to_dict()
    cases = report["scenes"] + sum(c["cases"] + c["controls"] for c in report["cues"].values())
    return report, time.perf_counter() - start, cases


def _profile(model, scenes: int, seed: int) -> dict:
    """Wall time inside the explainers, the games and the causal truth, as shares of one fast run."""
    spent = {"explainers": 0.0, "games": 0.0, "causal": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    originals = (saliency_benchmark._Games.__call__, saliency_benchmark.causal_truth)
    saliency_benchmark._Games.__call__ = timed("games", originals[0])
    saliency_benchmark.causal_truth = timed("causal", originals[1])
    try:
        _, total, _ = _run(model, scenes, seed, fast=True)
    finally:
        saliency_benchmark._Games.__call__, saliency_benchmark.causal_truth = originals[0], originals[1]
    # The rest of a case is the explainers (and the few milliseconds of scoring arithmetic).
    spent["explainers"] = total - spent["games"] - spent["causal"]
    return {k: round(v / total, 3) for k, v in spent.items()} | {"total_s": round(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--workers", type=int, default=1,
                        help="also time the fast path on this many worker processes (speedup_workers: against one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    fast, fast_s, cases = _run(model, args.scenes, args.seed, fast=True)
    plain, plain_s, _ = _run(model, args.scenes, args.seed, fast=False)
    reference = dict(_numbers(plain))
    difference = max((abs(value - reference[key]) for key, value in _numbers(fast)
                      if key in reference and not key.startswith(".seconds")), default=0.0)
    result = {"cases": cases, "per_case_s": {"fast": round(fast_s / cases, 3), "plain": round(plain_s / cases, 3)},
              "speedup": round(plain_s / fast_s, 2), "max_abs_difference": difference,
              "threads": torch.get_num_threads()}
    if args.workers > 1:
        shared, shared_s, _ = _run(model, args.scenes, args.seed, fast=True, workers=args.workers)
        result["speedup_workers"] = round(fast_s / shared_s, 2)
        result["max_abs_difference_workers"] = max(
            (abs(value - reference[key]) for key, value in _numbers(shared)
             if key in reference and not key.startswith(".seconds")), default=0.0)
    if args.profile:
        result["profile"] = _profile(model, args.scenes, args.seed)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
