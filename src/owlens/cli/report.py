"""``owlens report RUN_DIR``: render a run folder into one self-contained HTML file."""

from __future__ import annotations

import argparse

from owlens.cli.common import at_least, output_file

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="render a run folder as one self-contained HTML page",
        description="Images, maps and figures are inlined (no network). Maps larger than --max-map-side "
                    "pixels are downsampled in the page; the .npy files in the run keep full resolution.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder with run.json (e.g. from owlens demo)")
    parser.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    parser.add_argument("--max-map-side", type=at_least(1), default=256, help="largest map side in the page, in pixels")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.viz.report import render_report

    if args.out:
        output_file(args.out, expected="an HTML file to write")
    report = render_report(args.run_dir, args.out, max_map_side=args.max_map_side)
    print(f"report: {report.path} ({report.size_bytes / 1e6:.2f} MB, {report.items} images)")
    return 0
