"""``owlens detect IMAGE --query TEXT``: OWL's boxes, computed from the same E the MLLM reads."""

from __future__ import annotations

import argparse

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import at_least, json_option, load_model, model_options, output_file, probability, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect", parents=[model_options(), json_option("print boxes as JSON")],
        help="detect objects by text query from the shared embedding",
        description="Score every patch box of IMAGE against each text query (OWL-ViT's open-vocabulary "
                    "detection, run from J's shared embedding E).")
    parser.add_argument("image", help="image file")
    parser.add_argument("--query", action="append", required=True, metavar="TEXT",
                        help='text query, e.g. "a photo of a red circle"; repeat for several')
    parser.add_argument("--threshold", type=probability, default=0.1, help="minimum box score")
    parser.add_argument("--max-per-query", type=at_least(1), default=10, help="boxes kept per query")
    parser.add_argument("--out", metavar="PNG", help="write the image with the boxes drawn")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from owlens.images import load_image
    from owlens.models.postprocess import select_boxes

    if args.out:
        output_file(args.out, expected="a PNG file to write")  # before the model loads
    image = load_image(args.image)
    model = load_model(args)
    with torch.no_grad():
        detections = model.detect(model.encode_images(image), args.query)
    boxes = select_boxes(detections, args.query, image.size, threshold=args.threshold,
                         max_per_query=args.max_per_query)
    presence = detections.presence()[0].tolist()
    if args.out:
        from owlens.viz.boxes import draw_boxes

        scale = max(1, 256 // max(image.size))
        drawing = draw_boxes(image, [b.box_xyxy_px for b in boxes], [f"{b.query} {b.score:.2f}" for b in boxes],
                             scale=scale)
        drawing.save(args.out)
    if args.json:
        write_json({"image": args.image, "presence": dict(zip(args.query, presence)),
                    "boxes": [box.to_dict() for box in boxes]})
    else:
        for query, score in zip(args.query, presence):
            print(f"{query}: presence {score:.3f}")
        for box in boxes:
            print(f"  {box.query}  score {box.score:.3f}  box_xyxy_px "
                  + " ".join(f"{v:.1f}" for v in box.box_xyxy_px))
    return 0
