"""`owlens --help` (and every subcommand's) is built without the numerical stack: start-up stays a fraction of a
second, which is what a user typing --help waits for."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "numpy", "PIL", "safetensors")

_PROBE = """
import contextlib, io, sys
from owlens.cli import build_parser, main
parser = build_parser()
with contextlib.redirect_stdout(io.StringIO()) as out:
    for argv in (["--help"], *[[name, "--help"] for name in sorted(parser._subparsers._group_actions[0].choices)]):
        try:
            main(argv)
        except SystemExit:
            pass
assert "usage: owlens" in out.getvalue()
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_help_imports_no_numerical_library():
    probe = _PROBE.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"`owlens --help` imported {result.stdout.strip()}"
