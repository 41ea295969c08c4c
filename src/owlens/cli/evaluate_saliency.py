"""``owlens evaluate saliency``: every explainer against the toy world's truth, or the paper's WSOL check."""

from __future__ import annotations

import argparse
import sys
import tempfile

from owlens.cli.common import (
    HelpFormatter,
    at_least,
    held_folder,
    json_option,
    load_model,
    model_options,
    output_folder,
    progress_options,
    scenes_option,
    seed_option,
    write_json,
)

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.

_EPILOG = """\
Prints {"methods": {NAME: {"pointing_game", "mass_accuracy", "rank_accuracy", "maxboxacc", "deletion_auc",
"insertion_auc", "deletion_auc_pixel", "insertion_auc_pixel", "causal_pointing": {"object"|CUE: value},
"cue_pointing", ...}}, "scenes": N, "cue_cases": K, "cues": {CUE: {"cases", "verified_causal", ...}},
"causal", "paired": {NAME: {METRIC: [mean, lo, hi]}} (NAME minus detection_only), "seconds", ...}.
Localisation metrics are over the object tokens the model gets right; deletion/insertion over every object
token, in E (image tokens replaced by a reference mean token) and in pixels (patches replaced by the scene's
background, E re-encoded); causal_pointing against the object whose removal from the scene lowers the
explained logit most; cue_pointing over the held-out cue-without-partner scenes on which the model answers
"yes" (CUE is "cross→star" or "square→triangle"; the unnamed cue_* keys are cross→star's).
With --wsol DIR: {"methods": {NAME: {"maxboxacc", "maxboxacc_v2",
"pointing_game"}}, "images": M} on a folder holding localization.txt or CUB-200-2011's images.txt and
bounding_boxes.txt (the paper's check: token "bird" after "... ASSISTANT: The image shows a").
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "saliency", parents=[model_options(),
                             scenes_option(500, "object scenes, and cue candidates per injected prior"),
                             seed_option("fixes the scenes, the objects and the random maps"),
                             json_option("print the full JSON (default: a table)"), progress_options()],
                             help="saliency maps of every method against known truth",
        description="Explain the shape word of a named object on held-out toy scenes (and the two injected "
                    "hallucinations) with every method, and score plausibility, faithfulness in E and in pixels, "
                    "causal pointing against re-rendered scenes, and the cue tests.",
        epilog=_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--methods", metavar="A,B", help="comma-separated subset of ga, object_attribution, gradient, "
                                                         "gradient_input, attention, rollout, detection_only, random "
                                                         "(default: all)")
    parser.add_argument("--steps", type=at_least(1), default=16,
                        help="deletion/insertion steps, in E and in pixels (%(default)s: 4 of 64 tokens a step)")
    parser.add_argument("--batch-size", type=at_least(1), default=64, help="cases per forward pass")
    parser.add_argument("--workers", type=at_least(1), default=None,
                        help="processes sharing the cases (default: one per CPU core, on a CPU model, once there "
                             "are 20 cases per worker; the results do not depend on it)")
    parser.add_argument("--out", metavar="DIR", help="keep per-case rows here (a rerun resumes); default: none kept")
    wsol = parser.add_argument_group("WSOL folder (the paper's CUB check)")
    wsol.add_argument("--wsol", metavar="DIR", help="images with localization.txt, or a CUB-200-2011 folder")
    wsol.add_argument("--token", help="token to explain (default: the paper's 'bird')")
    wsol.add_argument("--question", help="question (default: the paper's \"What's the content of the image?\")")
    wsol.add_argument("--answer-prefix", help="teacher-forced answer start (default: the paper's 'The image shows a')")
    wsol.add_argument("--resolution", type=at_least(1), default=224, help="protocol resolution of maps and boxes")
    wsol.add_argument("--limit", type=at_least(1), help="first N images only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.out:
        output_folder(args.out)  # before the model loads: a wrong --out costs seconds
    model = load_model(args)
    with held_folder(args.out, model) as folder:
        payload = _evaluate(args, model, methods)
        if folder is not None:
            from owlens.browse import evaluation_run, methods_table

            counts = {k: payload[k] for k in ("scenes", "cue_cases", "images") if k in payload}
            flat = {name: _flat(row) for name, row in payload["methods"].items()}
            evaluation_run(folder, "owlens evaluate saliency", [methods_table("methods", flat)],
                           model, {**{k: v for k, v in vars(args).items() if k in _SETTINGS}, **counts})
    if args.json:
        write_json(payload)
        return 0
    rows = {name: _flat(row) for name, row in payload["methods"].items()}
    columns = sorted({key for row in rows.values() for key in row}, key=_order)
    print(f"{'method':>15} " + " ".join(f"{c[:14]:>14}" for c in columns))
    for name, row in rows.items():
        print(f"{name:>15} " + " ".join(f"{_cell(row.get(c)):>14}" for c in columns))
    counts = {k: payload[k] for k in ("scenes", "cue_cases", "images") if k in payload}
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


_SETTINGS = ("scenes", "seed", "methods", "steps", "wsol", "token", "question", "answer_prefix", "resolution",
             "limit")


def _evaluate(args: argparse.Namespace, model, methods) -> dict:
    if args.wsol:
        from owlens.evaluation import wsol

        payload = wsol.run_wsol(model, args.wsol, methods=methods, token=args.token or wsol.PAPER_TOKEN,
                                question=args.question or wsol.PAPER_QUESTION,
                                answer_prefix=wsol.PAPER_ANSWER_PREFIX if args.answer_prefix is None
                                else args.answer_prefix, resolution=args.resolution, limit=args.limit,
                                out_dir=args.out, progress=not args.no_progress).to_json()
    else:
        from owlens.evaluation.saliency_benchmark import run_saliency_benchmark

        with tempfile.TemporaryDirectory(prefix="owlens-saliency-") as scratch:
            payload = run_saliency_benchmark(model, n_scenes=args.scenes, seed=args.seed, methods=methods,
                                             out_dir=args.out or scratch, steps=args.steps,
                                             batch_size=args.batch_size, workers=args.workers,
                                             progress=not args.no_progress,
                                             log=lambda m: print(m, file=sys.stderr)).to_dict()
    return payload


_KEYS = ("pointing_game", "pointing_game_box", "mass_accuracy", "rank_accuracy", "maxboxacc", "maxboxacc_v2",
         "deletion_auc", "insertion_auc", "deletion_auc_pixel", "insertion_auc_pixel", "cue_pointing",
         "cue_pointing_control")


def _flat(row: dict) -> dict:
    """Per-group figures ({"object": v, "cross→star": v}) become columns "causal_pointing[object]" …; CIs stay out."""
    out = {}
    for key, value in row.items():
        if key.endswith("_ci"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}[{group}]": v for group, v in value.items()})
        else:
            out[key] = value
    return out


def _order(key: str) -> tuple[int, str]:
    base = key.split("[")[0]
    return (_KEYS.index(base) if base in _KEYS else len(_KEYS), key)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"
