"""``owlens calibrate``: fit a model's grounding calibration (τ on p_c, the combined flag) and save it beside W."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import (
    HelpFormatter,
    at_least,
    load_model,
    model_options,
    output_folder,
    progress_options,
    write_json,
)

_EPILOG = """\
The file is calibration.json in the projector folder (--projector; the toy world's own for the shipped toy
world), or in --save-to. `owlens check`, `describe --check`, the demo and `pope run` read it from there; it
records W's sha256 and is refused once W changes. The toy world's shipped file is exactly what
  owlens calibrate
writes (its calibration split of seed 1000, 400 scenes). For another model, a labelled POPE-format split of
images the evaluation never scores:
  owlens calibrate --questions cal.jsonl --images cal_images/ --owl ... --mllm ... --projector ./w-owl-llava
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", parents=[model_options(), progress_options()],
        help="fit τ and the hallucination flag on a calibration split",
        description="Answer a labelled calibration split (the toy world's own by default) through J, choose τ on "
                    "the detector's presence p_c and fit the combined flag, and write calibration.json beside W.",
        epilog=_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--questions", metavar="JSONL", help="labelled POPE questions (default: the toy world's)")
    parser.add_argument("--images", metavar="DIR", help="their images (with --questions)")
    parser.add_argument("--suffix", default="", help="text appended to every question")
    parser.add_argument("--toy-seed", type=int, default=None, help="toy calibration scenes' seed (default 1000)")
    parser.add_argument("--toy-images", type=at_least(1), default=None, help="toy calibration scenes (default 400)")
    parser.add_argument("--batch-size", type=at_least(1), default=64, help="questions per forward pass")
    parser.add_argument("--save-to", metavar="DIR", help="folder for calibration.json (default: the projector's)")
    parser.add_argument("--work", metavar="DIR", help="keep answers here (a rerun resumes); default: temporary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.evaluation.toy_pope import TOY_CALIBRATION_IMAGES, TOY_CALIBRATION_SEED, calibrate_toy
    from owlens.hallucination.calibration import save_calibration
    from owlens.hallucination.runner import calibrate_on_questions

    if (args.questions is None) != (args.images is None):
        raise ValueError("expected --questions and --images together (or neither, for the toy world's split)")
    for option, folder in (("--save-to", args.save_to), ("--work", args.work)):
        if folder is not None:
            output_folder(folder, option)  # before the model loads
    model = load_model(args)
    target = args.save_to or model.projector_folder
    if target is None:
        raise ValueError("expected --save-to DIR: this model has no projector folder to write beside")
    output_folder(target, "--save-to (default: the projector's folder)")  # before the calibration's answers
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="owlens-calibrate-") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.questions:
            calibration = calibrate_on_questions(model, args.questions, args.images, work / "answers.jsonl",
                                                 batch_size=args.batch_size, prompt_suffix=args.suffix,
                                                 progress=not args.no_progress, log=log)
        else:
            seed = TOY_CALIBRATION_SEED if args.toy_seed is None else args.toy_seed
            count = TOY_CALIBRATION_IMAGES if args.toy_images is None else args.toy_images
            calibration = calibrate_toy(model, work, seed=seed, n_images=count, batch_size=args.batch_size,
                                        progress=not args.no_progress, log=log)
    path = save_calibration(calibration, target)
    write_json({"path": str(path), **calibration.to_dict()})
    return 0
