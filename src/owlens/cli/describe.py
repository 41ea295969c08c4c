"""``owlens describe IMAGE --prompt TEXT``: the MLLM answers through J (E → W → LM)."""

from __future__ import annotations

import argparse

import torch

from owlens.cli.common import at_least, load_model, model_options, positive_float, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "describe", parents=[model_options()], help="generate an answer about an image through J",
        description="Generate text about IMAGE with the MLLM reading OWL's embedding through W. A prompt "
                    "without the image placeholder is wrapped in the model's template.")
    parser.add_argument("image", help="image file (any format PIL reads)")
    parser.add_argument("--prompt", required=True, help="question, or a full prompt holding the image placeholder")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=32, help="answer length in tokens")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="softmax temperature for --sample")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample (same seed, same text)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the plain answer")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = load_model(args)
    prompt = args.prompt if model.processor.image_token in args.prompt else model.processor.chat(args.prompt)
    with torch.no_grad():
        embedding = model.encode_images(args.image)
        result = model.generate(embedding, [prompt], max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                                temperature=args.temperature, seed=args.seed)
    if args.json:
        write_json({"image": args.image, "prompt": prompt, "answer": result.texts[0],
                    "token_ids": result.token_ids[0]})
    else:
        print(result.texts[0])
    return 0
