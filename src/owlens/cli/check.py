"""``owlens check IMAGE --prompt TEXT``: every object the answer names, grounded or not by the detector."""

from __future__ import annotations

import argparse
from pathlib import Path

from owlens.cli.common import (
    at_least,
    json_option,
    load_model,
    model_options,
    open_probability,
    output_file,
    output_folder,
    write_json,
)
from owlens.persist.atomic import atomic_write_bytes
from owlens.persist.lock import folder_lock

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", parents=[model_options(), json_option()], help="answer, then ground every object the answer mentions",
        description="Generate an answer about IMAGE, find the objects it mentions, and ask the detector, from the "
                    "same embedding E, for each object's presence p_c and best box: below τ it is ungrounded, a "
                    "likely hallucination. Each named object is read on a box of its own: where two names' best "
                    "boxes overlap (IoU >= 0.5), the weaker name is read on its best remaining box.")
    parser.add_argument("image", help="image file")
    parser.add_argument("--prompt", required=True, help="question, or a full prompt holding the image placeholder")
    parser.add_argument("--vocabulary", choices=("auto", "toy", "coco"), default="auto",
                        help="object names to look for: toy world shapes, or COCO's 80 classes with synonyms "
                             "(auto: toy for the shipped toy world, else coco)")
    parser.add_argument("--threshold", type=open_probability, default=None,
                        help="τ on p_c, overriding the model's calibration.json (written by `owlens calibrate`); "
                             "without either, 0.5 and the verdicts say they are uncalibrated")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=64, help="answer length in tokens")
    parser.add_argument("--out", metavar="PNG", help="draw every mentioned object's best box; the run folder "
                                                      "PNG-stem.run/ beside it gets run.json (`owlens report` it)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.hallucination.check import check
    from owlens.hallucination.vocabulary import coco_vocabulary
    from owlens.images import load_image
    from owlens.toyworld.text import toy_vocabulary

    out = None if args.out is None else _drawing(args.out)  # before the model loads: a wrong --out costs seconds
    image = load_image(args.image)
    toy = args.vocabulary == "toy" or (args.vocabulary == "auto" and not (args.owl or args.mllm))
    model = load_model(args)
    result = check(model, image, args.prompt, toy_vocabulary() if toy else coco_vocabulary(),
                   threshold=args.threshold, max_new_tokens=args.max_new_tokens)
    if out is not None:
        _write(out, image, result, model, args)
    if args.json:
        write_json({"image": args.image, **result.to_dict()})
        return 0
    print(result.answer)
    print_verdicts(result.objects, result.threshold, result.threshold_source)
    return 0


def _drawing(out: str) -> Path:
    out = output_file(out, expected="a PNG file to write")
    output_folder(run_folder(out), "--out (its run folder)")
    return out


def run_folder(drawing: Path) -> Path:
    """Where ``check --out PNG`` writes run.json: the PNG's stem + ".run", beside it (as ``pope run`` does)."""
    return drawing.with_name(drawing.stem + ".run")


def _write(out: Path, image, result, model, args: argparse.Namespace) -> None:
    import io

    from owlens.browse import check_run
    from owlens.viz.boxes import draw_boxes

    labels = [f"{o.name} {o.presence:.2f}" + ("" if o.grounded else " UNGROUNDED") for o in result.objects]
    drawing = draw_boxes(image, [o.box_xyxy_px for o in result.objects], labels,
                         widths=[3 if o.grounded else 1 for o in result.objects], scale=max(1, 256 // max(image.size)))
    folder = run_folder(out)
    with folder_lock(folder):
        buffer = io.BytesIO()
        drawing.save(buffer, format="PNG")
        atomic_write_bytes(out, buffer.getvalue())
        check_run(folder, image, result, model, {"threshold": args.threshold, "vocabulary": args.vocabulary})


def print_verdicts(objects, threshold: float, source: str) -> None:
    """The verdict lines ``check`` and ``describe --check`` print, after a line saying what judged them."""
    combined = any(o.p_yes is not None for o in objects)
    if combined:
        print(f"  verdicts: the calibrated flag on p_c and the MLLM's own P(yes) (τ on p_c alone: {threshold:.3f})")
    else:
        print(f"  τ: p_c > {threshold:.3f} ({source})")
    for o in objects:
        verdict = "grounded  " if o.grounded else "UNGROUNDED"
        mllm = f"  P(yes) {o.p_yes:.3f}" if o.p_yes is not None else ""
        held = f"  (its best box is the {o.held_by}'s; read on its next best)" if o.held_by else ""
        print(f"  {verdict} {o.name}: p_c {o.presence:.3f}{mllm}  box_xyxy_px "
              + " ".join(f"{v:.1f}" for v in o.box_xyxy_px) + held)
    if not objects:
        print("  (the answer names no object of the vocabulary)")
