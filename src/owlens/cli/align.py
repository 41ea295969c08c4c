"""``owlens align train``: fit W by feature distillation for any OWL/LLaVA pair (docs/design.md §2)."""

from __future__ import annotations

import argparse

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import (
    HelpFormatter,
    at_least,
    below,
    output_folder,
    positive_float,
    progress_options,
    seed_option,
)

_EPILOG = """\
Paper defaults: AdamW lr 1e-4, weight decay 1e-2, global batch 16, one epoch, the deep MLP
768→8192→8192→8192→4096 (ReLU). Rerun the same command to resume from the last checkpoint in --out.

several GPUs (Hugging Face accelerate; the batch stays global):
  accelerate launch --num_processes 4 -m owlens align train --owl google/owlvit-base-patch32 \\
      --mllm llava-hf/llava-1.5-7b-hf --images ./openimages --out ./w-owl-llava --bf16
"""


def register(subparsers) -> None:
    align = subparsers.add_parser("align", help="train the alignment W between a detector and an MLLM")
    commands = align.add_subparsers(dest="align_command", metavar="COMMAND", required=True)
    parser = commands.add_parser(
        "train", parents=[seed_option("fixes W's initialisation and the image order"), progress_options()],
        help="distil W: MSE between W(E[:, 1:]) and the MLLM's own image tokens",
        description="Train W on images only, OWL and the MLLM frozen. Writes OUT/projector (W) when done, "
                    "OUT/checkpoint every --checkpoint-every steps, OUT/result.json.",
        epilog=_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--owl", required=True, metavar="ID_OR_DIR", help="OWL-ViT/OWLv2 detector")
    parser.add_argument("--mllm", required=True, metavar="ID_OR_DIR", help="LLaVA-family MLLM")
    parser.add_argument("--images", required=True, metavar="DIR_OR_LIST",
                        help="folder of images (recursive) or a text file with one path per line")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (resumed if it has a checkpoint)")
    parser.add_argument("--shape", choices=("paper", "light"), default="paper",
                        help="W's architecture: the paper's deep MLP, or LLaVA-projector-shaped (default: paper)")
    parser.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=below(1), default=1e-2, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="global batch across all processes")
    parser.add_argument("--epochs", type=at_least(1), default=1, help="passes over the images")
    parser.add_argument("--checkpoint-every", type=at_least(1), default=200, metavar="STEPS",
                        help="steps between checkpoints")
    parser.add_argument("--max-steps", type=at_least(1), help="stop after this many steps (a checkpoint is kept)")
    parser.add_argument("--bf16", action="store_true", help="frozen models in bfloat16 and bf16 autocast")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (ignored under accelerate launch)")
    parser.add_argument("--workers", type=at_least(0), default=0, help="image-decoding worker processes")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.align import AlignConfig, list_images, train_alignment
    from owlens.models.joint import JointModel

    output_folder(args.out)  # before the models load
    images = list_images(args.images)
    model = JointModel.from_pretrained(owl=args.owl, mllm=args.mllm, init_projector=args.shape, init_seed=args.seed,
                                       dtype="bf16" if args.bf16 else "fp32", device=args.device)
    model.alignment.float()  # W's master weights stay in float32 even when the frozen models are bf16
    config = AlignConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         max_steps=args.max_steps, mixed_precision="bf16" if args.bf16 else "no",
                         num_workers=args.workers)
    result = train_alignment(model, images, args.out, config, progress=not args.no_progress)
    if result.rank:  # under accelerate launch, one summary is enough
        return 0
    print(f"{result.steps} steps, {result.images_used} images used, {result.images_skipped} unreadable skipped; "
          + (f"W written to {result.projector_dir}" if result.projector_dir else "stopped early: rerun to resume"))
    return 0
