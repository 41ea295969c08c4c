"""The detector's text query for a concept: the paper's OWL-ViT query, one template for every measure.

GA and the other explainers query OWL for the explained token, the hallucination check for each object the
answer names, the bias perturbation for C− and C+: all with ``QUERY_TEMPLATE``, whose ``{}`` is the concept.
"""

from __future__ import annotations

__all__ = ["QUERY_TEMPLATE", "check_query_template"]

QUERY_TEMPLATE = "a photo of a {}"  # the CLIP prompt OWL-ViT was trained with, and the paper's query


def check_query_template(template, what: str = "query_template") -> str:
    """``template`` if it is a string with one ``{}`` for the concept; ValueError saying so otherwise."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"{what} needs a '{{}}' for the concept, exactly once (expected e.g. {QUERY_TEMPLATE!r}); "
                         f"received {template!r}")
    return template
