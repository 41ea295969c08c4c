"""``owlens explain IMAGE --prompt TEXT --token WORD``: why the MLLM said a token, as a map over the image."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

from owlens.cli.common import at_least, load_model, model_options, output_folder, write_json
from owlens.persist.atomic import atomic_write_bytes
from owlens.persist.lock import folder_lock

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.

# The explainers by name, as owlens.explain.registry lists them (GA first; kept literal so --help stays light).
_METHODS = ("ga", "object_attribution", "gradient", "gradient_input", "attention", "rollout", "detection_only",
            "random")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", parents=[model_options()], help="explain an output token as a saliency map over the image",
        description="Explain why the MLLM gives a token for IMAGE. Gradient Alignment (the paper's method): boxes "
                    "of the detector whose gradients on the shared embedding align with the token's. Writes, per "
                    "token, an overlay PNG, a box drawing (line width by class weight), JSON and the map as .npy.")
    parser.add_argument("image", help="image file")
    parser.add_argument("--prompt", required=True, help="question, or a full prompt holding the image placeholder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", metavar="WORD", help="the token to explain, as the next word after the prompt")
    which.add_argument("--all-tokens", action="store_true", help="generate an answer and explain every token")
    parser.add_argument("--query", metavar="TEXT", help='detector concept (default: "a photo of a WORD")')
    parser.add_argument("--method", choices=_METHODS, default="ga",
                        help="explainer; object_attribution also names the objects the token rests on")
    parser.add_argument("--vocabulary", metavar="A,B|@FILE",
                        help="object_attribution: the concepts that name a box, comma-separated or one per line in "
                             "FILE (default: the detector's own list when its folder has one, else COCO's 80 classes)")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=16, help="answer length for --all-tokens")
    parser.add_argument("--boxes", type=at_least(0), default=5, help="boxes to draw, by class weight")
    parser.add_argument("--out", metavar="DIR", default="explain-out", help="run folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.browse import explain_run
    from owlens.explain import AnswerTarget, ExplainInputs, TokenTarget
    from owlens.explain.registry import make_explainer
    from owlens.images import load_image

    out = output_folder(args.out)  # before the model loads: a wrong --out costs seconds
    image = load_image(args.image)
    model = load_model(args)
    inputs = ExplainInputs.from_images(model, image, args.prompt)
    target = (AnswerTarget(max_new_tokens=args.max_new_tokens, query=args.query) if args.all_tokens
              else TokenTarget(args.token, args.query))
    options = {"vocabulary": _vocabulary(args.vocabulary)} if args.method == "object_attribution" and \
        args.vocabulary else {}
    saliencies = make_explainer(args.method, model, **options).explain_all(inputs, target)[0]
    eos = model.processor.mllm_tokenizer.eos_token_id
    if args.all_tokens and len(saliencies) >= args.max_new_tokens and saliencies[-1].token_id != eos:
        print(f"owlens explain: warning: the answer was cut at {args.max_new_tokens} tokens (--max-new-tokens); "
              "pass a larger value to explain all of it", file=sys.stderr)
    with folder_lock(out):
        for index, saliency in enumerate(saliencies):
            paths = _write(saliency, image, out / f"{Path(args.image).stem}-{index:02d}-{_slug(saliency.token)}",
                           args.boxes)
            print(f"{saliency.token!r} (position {saliency.position}, logit {saliency.logit:.3f}): "
                  + " ".join(str(p) for p in paths))
            for obj in saliency.objects or ():
                print("  " + describe_object(saliency, obj))
        settings = {"method": args.method, "token": args.token, "all_tokens": args.all_tokens, "query": args.query}
        explain_run(out, image, args.prompt, saliencies, model, settings)
    print(f"run folder: {out} (`owlens report {out}`)", file=sys.stderr)  # stdout: one line per token
    return 0


def describe_object(saliency, obj) -> str:
    """One line: "'star' rests on the object OWL reads as 'cross' (p 0.81) at [x0, y0, x1, y1]; without it …"."""
    corners = ", ".join(f"{v:.0f}" for v in obj.box_xyxy_px)
    verb = "drops" if obj.logit_without < saliency.logit else "rises"
    return (f"{saliency.token!r} rests on the object OWL reads as {concept_name(obj.concept)!r} "
            f"(p {obj.concept_score:.2f}) at [{corners}]; without it the logit {verb} {saliency.logit:.1f} → "
            f"{obj.logit_without:.1f}" + ("" if obj.logit_without_first is None else
                                          f", {obj.logit_without_first:.1f} with the first object gone too"))


def concept_name(query: str) -> str:
    """"a photo of a red cross" → "red cross": the concept without the query template around it."""
    return re.sub(r"^(a photo of (an?|the) )", "", query.strip())


def _vocabulary(text: str) -> list[str]:
    if text.startswith("@"):
        lines = Path(text[1:]).read_text().splitlines()
    else:
        lines = text.split(",")
    concepts = [line.strip() for line in lines if line.strip()]
    if not concepts:
        raise ValueError(f"--vocabulary: expected at least one concept; received {text!r}")
    return concepts


def _slug(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", token).strip("_") or "token"


def _write(saliency, image, stem: Path, boxes: int) -> list[Path]:
    import numpy as np

    from owlens.viz.boxes import draw_boxes
    from owlens.viz.heatmap import overlay

    scale = max(1, 256 // max(image.size))
    paths = [stem.with_name(stem.name + suffix) for suffix in ("-overlay.png", ".json", ".npy", "-boxes.png")]
    _save_png(overlay(image, saliency.map_array(), scale=scale), paths[0])
    write_json(saliency.to_dict(), paths[1])
    buffer = io.BytesIO()
    np.save(buffer, saliency.map_array())
    atomic_write_bytes(paths[2], buffer.getvalue())
    if saliency.class_weights is None:  # methods without boxes (gradient, attention, ...) have no box drawing
        return paths[:3]
    top = saliency.class_weights.argsort(descending=True)[:boxes].tolist()
    corners = saliency.boxes_xyxy_px()[top].tolist()
    weights = saliency.class_weights[top].tolist()
    # The paper draws GA's boxes with a line width that grows with the class weight.
    _save_png(draw_boxes(image, corners, [f"{w:.2f}" for w in weights], widths=[1 + 5 * w for w in weights],
                         scale=scale), paths[3])
    return paths


def _save_png(image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
