"""Hallucination detection with the shared embedding (docs/design.md §4): POPE with the detector's verdict per
question (``runner``, ``report``), the flag (``flag``, ``combined``), CHAIR (``chair``), a per-object check of
free answers (``check``), the per-model threshold (``calibration``); its toy-world validation is
``owlens.evaluation.toy_pope`` and ``hallucination_validation``.

The names below load their module on first use (PEP 562): scoring a POPE answer file (``report``) never
imports torch, and ``import owlens.hallucination.report`` must not pull in the runner through this file. The
functions ``check`` and ``chair`` share their module's name, which an import of that module would put in their
place here: import them from ``owlens.hallucination.check`` and ``.chair``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ground": "check", "CheckResult": "check", "ObjectVerdict": "check",
    "run_pope": "runner", "PopeRunConfig": "runner", "PopeRunResult": "runner", "PopeRow": "runner",
    "score_files": "report", "score_rows": "report", "PopeReport": "report", "FlagReport": "report",
    "ChairResult": "chair",
    "PresenceThreshold": "flag", "CombinedFlag": "combined", "fit_combined_flag": "combined",
    "Calibration": "calibration", "load_calibration": "calibration", "save_calibration": "calibration",
    "resolve_grounding": "calibration",
    "PopeQuestion": "pope_format", "read_questions": "pope_format", "write_questions": "pope_format",
    "coco_vocabulary": "vocabulary", "ObjectVocabulary": "vocabulary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'owlens.hallucination' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"owlens.hallucination.{_EXPORTS[name]}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
