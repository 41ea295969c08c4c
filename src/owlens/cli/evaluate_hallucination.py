"""``owlens evaluate hallucination``: does the flag find the hallucinations injected into the toy world?"""

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
Prints {"pope": {SPLIT: {accuracy, precision, recall, f1, yes_ratio}}, "presence_auroc", "flag_auroc", "flag_ap",
"disagreement_flag_auroc", "mllm_doubt_auroc", "detector_auroc", "flag_minus_doubt_auroc": [difference, lo, hi],
"check": {objects, false_ungrounded_rate, hallucinated, hallucinated_flagged_rate}, "calibration", ...}: the
headline figures are the adversarial split's; the flag is the combined one (detector and MLLM), fitted with τ
on the calibration split only, the paper's disagreement flag and single signals beside it; the interval is a
paired bootstrap over questions; "check" is `owlens check`'s verdict on held-out captions' objects; "splits"
holds every split's full report, "injected" the co-occurrence defect ("is there a star ?" on scenes with a
cross and no star) and "chair" CHAIR_s/CHAIR_i of free captions with the detector's verdicts.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "hallucination", parents=[model_options(), seed_option("fixes the scenes and the questions"),
                                  scenes_option(500, "test scenes (500 images, as POPE)", old=("--images",)),
                                  json_option("print the full JSON (default: a summary)"), progress_options()],
                                  help="POPE splits, flag AUROC/AP and CHAIR on toy scenes",
        description="Build toy POPE files (random/popular/adversarial, 500 images by default), answer them through "
                    "J, choose the flag's threshold on a separate calibration split, and score.",
        epilog=_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--calibration-images", type=at_least(1), default=200,
                        help="images of the split τ is chosen on")
    parser.add_argument("--captions", type=at_least(0), default=200, help="test images captioned for CHAIR (0: none)")
    parser.add_argument("--batch-size", type=at_least(1), default=64, help="questions per forward pass")
    parser.add_argument("--out", metavar="DIR", help="keep files and answers here (a rerun resumes); default: a "
                                                      "temporary folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.evaluation.hallucination_validation import validate_hallucination

    if args.out:
        output_folder(args.out)  # before the model loads: a wrong --out costs seconds
    model = load_model(args)
    with tempfile.TemporaryDirectory(prefix="owlens-pope-") as scratch, held_folder(args.out, model) as folder:
        result = validate_hallucination(model, args.out or scratch, seed=args.seed, n_images=args.scenes,
                              calibration_images=args.calibration_images, caption_images=args.captions,
                              batch_size=args.batch_size, progress=not args.no_progress,
                              log=lambda m: print(m, file=sys.stderr))
        payload = result.to_dict()
        if folder is not None:
            _browsable(folder, payload, model, args)
    if args.json:
        write_json(payload)
        return 0
    for split, scores in payload["pope"].items():
        print(f"{split:>12}: " + "  ".join(f"{k} {_shown(v, '.4f')}" for k, v in scores.items()))
    mean, low, high = (_shown(v, "+.4f") for v in payload["flag_minus_doubt_auroc"])
    print(f"adversarial: presence AUROC {_shown(payload['presence_auroc'])}, flag AUROC "
          f"{_shown(payload['flag_auroc'])}, flag AP {_shown(payload['flag_ap'])} (τ = "
          f"{_shown(payload['threshold']['probability'])}, calibrated); disagreement flag "
          f"{_shown(payload['disagreement_flag_auroc'])}, MLLM doubt {_shown(payload['mllm_doubt_auroc'])}, "
          f"detector {_shown(payload['detector_auroc'])}; flag − doubt {mean} [{low}, {high}]")
    if payload["check"]:
        c = payload["check"]
        print(f"check on captions: {c['objects']} objects, {_shown(c['false_ungrounded_rate'], '.3f')} of the "
              f"correct ones called ungrounded, {_shown(c['hallucinated_flagged_rate'], '.3f')} of "
              f"{c['hallucinated']} hallucinated flagged")
    injected = payload["injected"]
    print(f"injected: {injected['n_questions']} star questions on cross scenes, yes-rate {injected['yes_rate']}, "
          f"flagged {injected['flagged_rate']}")
    return 0


def _shown(value, spec: str = ".4f") -> str:
    """A figure for the summary; JSON's null (a rate or AUROC with nothing to count: a small run) as "n/a"."""
    return "n/a" if value is None else format(value, spec)


def _browsable(folder, payload: dict, model, args: argparse.Namespace) -> None:
    from owlens.browse import evaluation_run
    from owlens.rundir import table

    headline = [[k, payload[k]] for k in ("presence_auroc", "flag_auroc", "flag_ap") if k in payload]
    injected = [[k, v] for k, v in payload.get("injected", {}).items() if isinstance(v, (int, float, str))]
    # "images": the run.json key of earlier runs, kept so that their settings compare equal
    settings = {"seed": args.seed, "images": args.scenes, "calibration_images": args.calibration_images,
                "captions": args.captions}
    evaluation_run(folder, "owlens evaluate hallucination", [
        table("adversarial split: the flag (τ chosen on the calibration split)", ("figure", "value"), headline),
        table("injected co-occurrence: 'is there a star ?' on cross scenes", ("figure", "value"), injected)],
        model, settings, pope=payload["pope"])
