"""The one ``to_dict`` of the frozen results whose JSON form is simply their fields.

Most of owlens' results (a POPE score, a threshold, a run's counts) are written out as they are held; each
used to spell out ``return asdict(self)``. They inherit it here instead, and a result whose JSON differs
from its fields (renamed keys, derived figures) keeps its own ``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict

__all__ = ["FieldsResult"]


class FieldsResult:
    """Mixin for a dataclass: ``to_dict()`` is its fields, nested dataclasses as dicts (``dataclasses.asdict``)."""

    __slots__ = ()

    def to_dict(self) -> dict:
        return asdict(self)
