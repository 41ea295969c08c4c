"""The ``owlens`` command line: thin subcommands over the library.

Each subcommand module exposes ``register(subparsers)``; ``main(argv) -> int`` is testable without a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from owlens import __version__
from owlens.cli.common import HelpFormatter

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
owlens explains a LLaVA-style MLLM through what its vision sees. An open-world detector (OWL-ViT) and the
MLLM read ONE shared vision embedding E, joined by a trained alignment W, so that text and boxes come from
the same place (Giulivi & Boracchi, arXiv 2405.14612).

With no checkpoint named, every command runs on the toy world shipped inside the package: a small OWL-ViT
and a small LLaVA trained on synthetic shapes, whose truth is known.

examples:
  owlens demo                                        # the toy world explained, checked, probed → runs/demo
  owlens describe scene.png --prompt "what is in the image ?"
  owlens detect scene.png --query "a photo of a red circle" --out boxes.png
  owlens explain scene.png --prompt "what is in the image ?" --all-tokens --out maps/
  owlens check scene.png --prompt "what is in the image ?"       # grounded / ungrounded objects
  owlens pope run questions.json --images val2014/ --out answers.jsonl
  owlens bias examples/bias/toy.yaml --out runs/bias
  owlens evaluate saliency --scenes 500 --json       # every method against the toy world's truth
  owlens detect photo.jpg --query "a photo of a cat" --owl google/owlvit-base-patch32 \\
      --mllm llava-hf/llava-1.5-7b-hf --projector ./w-owl-llava
"""


# Subcommand modules under owlens.cli, in the order --help lists them.
_COMMANDS = ("demo", "describe", "detect", "explain", "check", "calibrate", "pope", "bias", "report", "align",
             "toyworld",
             "evaluate")


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's help in one formatter: descriptions as written, each option's default shown."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        # One line, like every other error of owlens; the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="owlens", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"owlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"owlens.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _quiet_transformers()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        # Rows and checkpoints already written are whole (journals, atomic files): a rerun resumes from them.
        print(f"owlens {args.command}: interrupted; what was written is kept, rerun the command to resume",
              file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as err:
        # Expected failures (a missing checkpoint, a corrupt image, a bad prompt) end in one clear line.
        print(f"owlens {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # A read-only folder, a full disk: the system's reason and the file, not a traceback.
        where = f": {err.filename}" if err.filename else ""
        print(f"owlens {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _quiet_transformers() -> None:
    # Load bars and backend notices from transformers drown the command's own output; errors still show.
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
