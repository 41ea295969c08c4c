"""``owlens evaluate bias``: does the bias measure recover the toy world's injected Δ, and 0 where there is none?"""

from __future__ import annotations

import argparse

from owlens.cli.common import (
    at_least,
    fraction,
    held_folder,
    json_option,
    load_model,
    model_options,
    output_folder,
    positive_float,
    progress_options,
    scenes_option,
    seed_option,
    write_json,
)

# Library imports sit inside the command functions: `owlens --help` builds every parser without torch or numpy.


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bias", parents=[model_options(), seed_option("fixes the scenes"),
                         scenes_option(200, "held-out scenes (two at least: a CI needs pairs to vary)", minimum=2,
                                       old=("--n-scenes",)),
                         progress_options(shown=False),
                         json_option("print JSON (default: the headline figures as text)")],
                         help="bias assessment against the injected colour bias",
        description="Perturb E of held-out red single-object scenes toward blue as OWL sees it (by default through "
                    "the state two OWL layers before E) and measure "
                    "the change of J's 1-10 answer to the biased question ('heavy', injected +4 for blue) and "
                    "the control question ('round'), beside its controls: a shuffled random perturbation of the same "
                    "norms, a random one along which OWL's concept logits stay put (orthogonal), the identity swap "
                    "C- -> C- (the shuffled one corrected until OWL reads both colours as before) and a semantic "
                    "null swap red -> green; each also as the bias net of that control.")
    parser.add_argument("--method", choices=("fgsm", "pgd"), default=None,
                        help="default: the toy world's documented setting (see docs/benchmarks.md)")
    parser.add_argument("--epsilon", type=positive_float,
                        help="FGSM step / PGD budget, in the units of the state it is applied to (E, or --layer's)")
    parser.add_argument("--steps", type=at_least(1), help="PGD steps")
    parser.add_argument("--step-size", type=positive_float, help="PGD step size (default 2.5 * epsilon / steps)")
    parser.add_argument("--norm", choices=("linf", "l2"), help="PGD norm")
    parser.add_argument("--region", type=fraction,
                        help="move only the boxes where OWL sees C- (presence >= REGION x the best); "
                             "0 means all of E (the paper)")
    parser.add_argument("--layer", type=_layer,
                        help="perturb the state entering this OWL encoder layer, which reaches E through OWL's own "
                             "layers (the toy setting: 1); E: perturb E itself (the paper; the earlier toy setting is "
                             "--layer E --epsilon 22 --region 0.5)")
    parser.add_argument("--queries", choices=("colour", "shape"), default="colour",
                        help="OWL queries per colour: all five shapes (default) or the object's own shape")
    parser.add_argument("--export-images", metavar="DIR", help="also write the scenes as PNGs (for toy.yaml)")
    parser.add_argument("--out", metavar="DIR", help="also write a run folder (run.json) that `owlens report` renders")
    parser.set_defaults(run=run)


# The figures the summary prints and the run folder's table shows: the bias, each control, the bias net of each.
FIGURES = ("biased", "control", "random_control", "orthogonal_control", "identity_control", "null_control",
           "net_of_random", "net_of_orthogonal", "net_of_identity", "net_of_null")


def _layer(text: str):
    """--layer: "E" (E itself) or an OWL encoder layer, 0 or more."""
    if text.strip().upper() == "E":
        return "E"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected E or an encoder layer (0 or more); received {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from owlens.bias.spec import PerturbationSpec
    from owlens.evaluation.bias_validation import TOY_PERTURBATION, export_toy_images, validate_bias

    if args.out:
        output_folder(args.out)  # before the model loads: a wrong --out costs seconds
    if args.export_images:
        export_toy_images(args.export_images, args.seed, args.scenes)
    chosen = {k: v for k, v in {"method": args.method, "epsilon": args.epsilon, "steps": args.steps,
                                "step_size": args.step_size, "norm": args.norm, "region": args.region,
                                "layer": args.layer}.items()
              if v is not None}
    if chosen.get("region") == 0:
        chosen["region"] = None
    if chosen.get("layer") == "E":
        chosen["layer"] = None
    perturbation = PerturbationSpec(**chosen) if "method" in chosen else \
        PerturbationSpec(**{**TOY_PERTURBATION.to_dict(), **chosen})
    model = load_model(args)
    with held_folder(args.out, model) as folder:
        result = validate_bias(model, seed=args.seed, n_scenes=args.scenes, perturbation=perturbation,
                              queries=args.queries, progress=not args.no_progress).to_dict()
        if folder is not None:
            _browsable(folder, result, model)
    if args.json:
        write_json(result)
        return 0
    print(f"injected delta {result['injected_delta']:+.2f}; OWL swap success {result['owl_swap_success']:.3f}")
    for name in FIGURES:
        figure = result[name]
        print(f"{name:>18}: {figure['delta']:+.3f}  95% CI [{figure['ci'][0]:+.3f}, {figure['ci'][1]:+.3f}]")
    for name, figure in result["ceiling"].items():
        print(f"{'ceiling ' + name:>18}: {figure['delta']:+.3f}  95% CI [{figure['ci'][0]:+.3f}, "
              f"{figure['ci'][1]:+.3f}]  (scene re-rendered C+)")
    return 0


def _browsable(folder, result: dict, model) -> None:
    from owlens.browse import evaluation_run
    from owlens.rundir import table

    rows = [[name, result[name]["delta"], *result[name]["ci"]] for name in FIGURES]
    rows += [[f"ceiling {name}", f["delta"], *f["ci"]] for name, f in result["ceiling"].items()]
    title = "toy world: red → blue as OWL sees it"
    note = (f"Injected Δ = {result['injected_delta']:g}; OWL swapped red→blue on {result['owl_swap_success']:.0%} "
            "of the scenes.")
    evaluation_run(folder, "owlens evaluate bias", [table("paired deltas", ("figure", "delta", "CI low", "CI high"),
                                                          rows)],
                   model, result["settings"], bias={"title": title, "summary": {"groups": {"toy": result["summary"]}},
                                                    "note": note})
