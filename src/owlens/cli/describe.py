"""``owlens describe IMAGE --prompt TEXT``: the MLLM answers through J (E → W → LM)."""

from __future__ import annotations

import argparse

from owlens.cli.check import print_verdicts
from owlens.cli.common import at_least, json_option, load_model, model_options, positive_float, seed_option, write_json

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "describe", parents=[model_options(), seed_option("seed for --sample (same seed, same text)"),
                                 json_option("print JSON instead of the plain answer")],
                                 help="generate an answer about an image through J",
        description="Generate text about IMAGE with the MLLM reading OWL's embedding through W. A prompt "
                    "without the image placeholder is wrapped in the model's template.")
    parser.add_argument("image", help="image file (any format PIL reads)")
    parser.add_argument("--prompt", required=True, help="question, or a full prompt holding the image placeholder")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=32, help="answer length in tokens")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="softmax temperature for --sample")
    parser.add_argument("--check", action="store_true",
                        help="also ground every object the answer names (as `owlens check`, on the same E)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="with --check: τ on p_c, overriding the model's calibration.json")
    parser.add_argument("--vocabulary", choices=("auto", "toy", "coco"), default="auto",
                        help="with --check: object names to look for (auto: toy for the toy world, else coco)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    model = load_model(args)
    prompt = args.prompt if model.processor.image_token in args.prompt else model.processor.chat(args.prompt)
    with torch.no_grad():
        embedding = model.encode_images(args.image)
        result = model.generate(embedding, [prompt], max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                temperature=args.temperature, seed=args.seed)
    payload = {"image": args.image, "prompt": prompt, "answer": result.texts[0], "token_ids": result.token_ids[0]}
    grounding, objects = _verdicts(args, model, embedding, result.texts[0]) if args.check else (None, None)
    if grounding is not None:
        payload.update({"threshold": grounding.threshold.probability, "threshold_source": grounding.source,
                        "objects": [o.to_dict() for o in objects],
                        "ungrounded": [o.name for o in objects if not o.grounded]})
    if args.json:
        write_json(payload)
        return 0
    print(result.texts[0])
    if grounding is not None:
        print_verdicts(objects, grounding.threshold.probability, grounding.source)
    return 0


def _verdicts(args, model, embedding, answer: str) -> tuple:
    """(the ``Grounding`` that judged, one ``ObjectVerdict`` per object the answer claims)."""
    from owlens.hallucination.calibration import resolve_grounding
    from owlens.hallucination.check import claimed, ground
    from owlens.hallucination.vocabulary import coco_vocabulary
    from owlens.images import load_image
    from owlens.toyworld.text import toy_vocabulary

    toy = args.vocabulary == "toy" or (args.vocabulary == "auto" and not (args.owl or args.mllm))
    grounding = resolve_grounding(model, args.threshold)  # as `owlens check` judges
    names = claimed(args.prompt, answer, toy_vocabulary() if toy else coco_vocabulary())
    return grounding, ground(model, embedding, names, load_image(args.image).size, grounding)
