"""``owlens demo``: the toy world explained, checked and probed, with an HTML report (the README's first command)."""

from __future__ import annotations

import argparse

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import output_folder, seed_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[seed_option("which scenes")], help="run the toy-world demo and write an HTML report",
        description="On the toy world shipped with owlens: caption scenes, explain every answer token "
                    "(Gradient Alignment and baselines), ground every mentioned object with the detector, "
                    "catch the injected hallucination, probe the injected bias; write a run folder and "
                    "OUT/report.html.")
    parser.add_argument("--out", default="runs/demo", help="run folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.demo import DemoSettings, run_demo
    from owlens.viz.report import render_report

    output_folder(args.out)  # before the model loads: a wrong --out costs seconds
    folder = run_demo(args.out, settings=DemoSettings(seed=args.seed))
    report = render_report(folder)
    print(f"report: {report.path} ({report.size_bytes / 1e6:.2f} MB, {report.items} images) — open it in a browser")
    return 0
