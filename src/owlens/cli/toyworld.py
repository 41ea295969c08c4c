"""``owlens toyworld train|eval``: rebuild the shipped toy world, and score it against its known truth."""

from __future__ import annotations

import argparse

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import (
    json_option,
    load_model,
    model_options,
    output_folder,
    scenes_option,
    seed_option,
    write_json,
)


def register(subparsers) -> None:
    toyworld = subparsers.add_parser("toyworld", help="train or score the toy world (known-truth models)")
    commands = toyworld.add_subparsers(dest="toyworld_command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", parents=[seed_option("fixes every stage")],
        help="train detector, LLaVA and W from a seed (resumes stage by stage)",
        description="The whole recipe on CPU: a tiny OWL-ViT, a tiny LLaVA (tower pretraining, captions, "
                    "instructions) and W by the paper's distillation. Rerun to resume after an interrupt.")
    train.add_argument("--out", default="runs/toyworld", help="run folder")
    train.add_argument("--smoke", action="store_true", help="a few steps of every stage (a plumbing check)")
    train.add_argument("--ship", action="store_true", help="copy the final weights into the installed package")
    train.set_defaults(run=run_train)
    score = commands.add_parser(
        "eval", parents=[model_options(), scenes_option(500, "held-out scenes/questions per figure"),
                         seed_option("fixes the held-out scenes"), json_option("print JSON only")],
                         help="score detector, LLaVA and J on held-out scenes (JSON)",
        description="Detector mAP50, presence accuracy and caption F1 of LLaVA and of J, and the injected "
                    "defects measured directly (adversarial yes-rate, trait deltas by re-rendering).")
    score.set_defaults(run=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from owlens.toyworld.recipe import ship_weights, train_all

    output_folder(args.out)  # before any training: a wrong --out costs seconds, not a stage
    folders = train_all(args.out, seed=args.seed, smoke=args.smoke)
    if args.ship:
        print(f"shipped to {ship_weights(folders)}")
    write_json({name: str(path) for name, path in folders.items()})
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from owlens.toyworld.scorecard import scorecard

    card = scorecard(load_model(args), scenes=args.scenes, seed=args.seed)
    if args.json:
        write_json(card.to_dict())
    else:
        for key, value in card.to_dict().items():
            print(f"{key:36s} {value:.4f}" if isinstance(value, float) else f"{key:36s} {value}")
    return 0
