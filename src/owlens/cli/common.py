"""Options every model-backed subcommand shares, and the one place the CLI loads J."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from owlens.persist.atomic import atomic_write_text
from owlens.persist.fingerprint import FINGERPRINT, Fingerprint, claim, model_weights
from owlens.persist.lock import folder_lock

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.

__all__ = ["HelpFormatter", "at_least", "below", "fraction", "held_folder", "json_option", "load_model",
           "model_options", "open_probability", "output_file", "output_folder", "positive_float", "probability",
           "progress_options", "scenes_option", "seed_option", "write_json"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written, and every option's default at the end of its help."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        # ``is``, not ``in``: 0 == False, and a default of 0 (--seed) is a default worth showing
        if any(action.default is hidden for hidden in (None, False, argparse.SUPPRESS)) or "default" in text \
                or not action.option_strings:
            return text
        return f"{text} (default: {action.default})".lstrip()


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, refused at parse time otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; received {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # what argparse names in its own messages
    return parse


def _number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}")
    return value


def _ranged(expected: str, inside: Callable[[float], bool], doc: str) -> Callable[[str], float]:
    """An argparse type: a finite number for which ``inside`` holds, refused at parse time saying ``expected``."""

    def parse(text: str) -> float:
        value = _number(text, expected)
        if not inside(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; received {value:g}")
        return value

    parse.__name__ = expected.removeprefix("a ")  # what argparse names in its own messages
    parse.__doc__ = doc
    return parse


positive_float = _ranged("a number > 0", lambda v: v > 0, "A number > 0 (a temperature, a budget).")
probability = _ranged("a probability in [0, 1]", lambda v: 0 <= v <= 1, "A probability in [0, 1].")
open_probability = _ranged("a probability strictly between 0 and 1", lambda v: 0 < v < 1,
                           "A probability strictly between 0 and 1 (a threshold on p_c, whose logit must be finite).")
fraction = _ranged("a number in [0, 1]", lambda v: 0 <= v <= 1,
                   "A number in [0, 1] that is not a probability (a share, a region threshold).")


def below(maximum: float) -> Callable[[str], float]:
    """An argparse type: a number >= 0 and < ``maximum`` (a weight decay, say)."""
    return _ranged(f"a number in [0, {maximum:g})", lambda v: 0 <= v < maximum, below.__doc__)


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a run folder to write, checked before any model loads: refused when it names an existing
    file, or when it could not be created or written (a read-only disk, a file in the way, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option}: expected a folder; received the existing file {path}")
    _check_writable(path, option)
    return path


def output_file(path: str | Path, option: str = "--out", expected: str = "a file to write") -> Path:
    """``path`` as a file to write, checked as ``output_folder`` checks a folder. Files are written as
    ``.partial`` + rename (or appended, for a journal), so it is the folder around them that must be writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: expected {expected}; received the folder {path}")
    _check_writable(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option}: cannot write {path}: permission denied")
    return path


def _check_writable(folder: Path, option: str) -> None:
    """Refuse a folder the run could not create or write into, by creating a scratch file in the nearest folder
    that exists: mode bits do not stop root, and only a real write sees a read-only mount or an ACL."""
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option}: cannot create {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{option}: cannot write in {existing}: {err.strerror or err}") from None


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model (default: the toy world shipped with owlens)")
    group.add_argument("--owl", metavar="ID_OR_DIR", help="OWL-ViT/OWLv2 detector, e.g. google/owlvit-base-patch32")
    group.add_argument("--mllm", metavar="ID_OR_DIR", help="LLaVA-family MLLM, e.g. llava-hf/llava-1.5-7b-hf")
    group.add_argument("--projector", metavar="DIR", help="alignment W folder written by `owlens align train`")
    group.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16 | fp64")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parent


def seed_option(help: str) -> argparse.ArgumentParser:
    """Parent parser: ``--seed`` (an integer, 0 by default); ``help`` says what it fixes for this command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--seed", type=int, default=0, help=help)
    return parent


def json_option(help: str = "print JSON") -> argparse.ArgumentParser:
    """Parent parser: ``--json``, print the result as JSON (``help`` says what is printed otherwise)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help=help)
    return parent


def progress_options(*, shown: bool = True) -> argparse.ArgumentParser:
    """Parent parser: ``--progress`` / ``--no-progress``, both on every command, into ``args.no_progress``.

    ``shown``: whether the bar is on by default (off where stderr carries the command's own log lines).
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="no_progress", action="store_false", default=not shown,
                       help="show a progress bar on stderr " + ("(the default)" if shown else "(off by default)"))
    group.add_argument("--no-progress", dest="no_progress", action="store_true",
                       help="hide the progress bar" + ("" if shown else " (the default)"))
    return parent


def scenes_option(default: int, help: str, *, minimum: int = 1, old: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Parent parser: ``--scenes N``, how many toy scenes, into ``args.scenes``.

    ``old``: the flag's former names on this command (``--n-scenes``, ``--images``), still accepted so that
    scripts keep working, but left out of ``--help``.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--scenes", type=at_least(minimum), default=default, metavar="N", help=help)
    for name in old:
        parent.add_argument(name, dest="scenes", type=at_least(minimum), default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    return parent


@contextmanager
def held_folder(out: str | Path | None, model, settings: dict | None = None):
    """Hold the run folder ``out`` for the block and check that its rows come from ``model``'s weights (and
    ``settings``); with no folder, nothing to hold."""
    if out is None:
        yield None
        return

    folder = output_folder(out).resolve()
    with folder_lock(folder):
        claim(folder / FINGERPRINT, Fingerprint(weights=model_weights(model), settings=settings or {}))
        yield folder


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
    atomic_write_text(path, text)
