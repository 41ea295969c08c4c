"""``owlens bias SPEC.yaml --out DIR``: the bias benchmark of docs/design.md §5 on the user's own image folders."""

from __future__ import annotations

import argparse
import math
import sys

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.
from owlens.cli.common import load_model, model_options, output_folder, progress_options, write_json
from owlens.persist.atomic import atomic_write_text
from owlens.persist.lock import folder_lock


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bias", parents=[model_options(), progress_options()],
        help="measure a bias by perturbing what the detector sees",
        description="Perturb J's shared embedding so that the detector sees C+ where it saw C- (e.g. man -> "
                    "woman), ask the MLLM 1-10 trait questions on the clean and the perturbed embedding, and "
                    "report the mean paired change with a bootstrap CI, beside a random perturbation of the "
                    "same norms (shuffled, and orthogonal to OWL's concept logits) and the identity swap C- -> C- "
                    "(the shuffled one corrected until OWL reads both concepts as before), and where a group names "
                    "c_null a semantic null swap C- -> C0; the bias net of each control beside. Writes "
                    "DIR/records.jsonl (resumable), DIR/summary.json, DIR/bias.svg and DIR/run.json (`owlens report "
                    "DIR`). See examples/bias/*.yaml.")
    parser.add_argument("spec", help="benchmark spec (YAML)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder; rerun with it to resume")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from owlens.bias.runner import run_benchmark
    from owlens.bias.spec import load_spec
    from owlens.bias.summary import ImageError
    from owlens.browse import bias_run
    from owlens.viz.bias_plot import bias_plot_svg

    spec = load_spec(args.spec)  # validated before the model loads: a typo costs seconds, not a load
    out = output_folder(args.out)
    model = load_model(args)
    with folder_lock(out):
        result = run_benchmark(model, spec, out, progress=not args.no_progress)
        readable = sum(entry.n_images - entry.n_errors for entry in result.groups.values())
        if not readable:
            first = result.errors[0] if result.errors else ImageError("", "?", "no images")
            raise ValueError(f"no image of {args.spec} could be read (e.g. {first.image}: {first.error}); "
                             f"see {out / 'records.jsonl'}; nothing summarised")
        title = f"{spec.name}: paired delta of the expected 1-10 score (95% bootstrap CI)"
        payload = result.to_json()
        write_json(payload, out / "summary.json")
        atomic_write_text(out / "bias.svg", bias_plot_svg(payload, title=title))
        bias_run(out, payload, title, model, note=f"{readable} readable images")
    for group, entry in result.groups.items():
        adversarial = (entry.perturbations or {}).get("adversarial")
        swap = adversarial.swap_rate if adversarial is not None else float("nan")
        print(f"{group}: {entry.n_images} images, {entry.n_errors} unreadable, OWL swap rate {swap:.2f}")
        traits = entry.traits or {}
        pairs = [f.expected.n for figures in traits.values() for f in figures.conditions.values()]
        if pairs and min(pairs) < 2:
            print(f"owlens bias: warning: {group}: a 95% CI needs at least 2 images with a score (received "
                  f"{min(pairs)}); shown as n/a", file=sys.stderr)
        for trait, figures in traits.items():
            print(f"  {trait}: {_cells(figures.conditions)}")
            if (entry.net or {}).get(trait):
                print(f"  {trait}, the bias net of each control: {_cells(entry.net[trait])}")
    print(f"wrote {out / 'summary.json'}, {out / 'bias.svg'}, {out / 'run.json'} (`owlens report {out}`)")
    return 0


def _cells(figures: dict) -> str:
    """Each figure's expected-score delta and CI, on one line."""
    return "  ".join(f"{name} {_signed(f.expected.delta)} [{_signed(f.expected.ci95[0])}, "
                     f"{_signed(f.expected.ci95[1])}]" for name, f in figures.items())


def _signed(value) -> str:
    """A figure as printed; NaN (no pairs, or a CI of one image) is "n/a" rather than a crash or a false 0."""
    return "n/a" if value is None or math.isnan(value) else f"{value:+.3f}"
