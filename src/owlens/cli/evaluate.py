"""``owlens evaluate TARGET``: each method measured against the toy world's known truth.

Every target lives in its own module ``owlens.cli.evaluate_<target>`` exposing ``register(subparsers)``.
"""

from __future__ import annotations

import importlib

# The evaluation targets, in the order --help lists them.
_TARGETS: tuple[str, ...] = ("bias", "hallucination", "saliency")


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="measure a method against the toy world's ground truth",
                                   description="Run one of owlens' methods on held-out toy-world scenes and "
                                               "print its figures as JSON.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in _TARGETS:
        importlib.import_module(f"owlens.cli.evaluate_{name}").register(targets)
