"""Options every model-backed subcommand shares, and the one place the CLI loads J."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["model_options", "load_model", "write_json"]


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model (default: the toy world shipped with owlens)")
    group.add_argument("--owl", metavar="ID_OR_DIR", help="OWL-ViT/OWLv2 detector, e.g. google/owlvit-base-patch32")
    group.add_argument("--mllm", metavar="ID_OR_DIR", help="LLaVA-family MLLM, e.g. llava-hf/llava-1.5-7b-hf")
    group.add_argument("--projector", metavar="DIR", help="alignment W folder written by `owlens align train`")
    group.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16 | fp64 (default: auto)")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    return parent


def load_model(args: argparse.Namespace):
    from owlens.models.joint import JointModel

    return JointModel.from_pretrained(owl=args.owl, mllm=args.mllm, projector=args.projector,
                                      dtype=args.dtype, device=args.device)


def write_json(payload, path: str | Path | None = None) -> None:
    """Print JSON, or write it atomically to ``path``."""
    text = json.dumps(payload, indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
