"""A model's grounding calibration: τ on p_c and the combined flag, in ``calibration.json`` beside W.

τ and the flag's coefficients are properties of one J (its detector, its MLLM and the W between them), so
they live with the weights that define that pairing: in the projector folder (the one ``--projector`` names;
the toy world's is ``toyworld/weights/align``). The file records the sha256 of W's weights it was fitted
with; a calibration whose W has since changed (retrained weights) is refused as stale, so a verdict is never
quietly scored with another model's τ.

``owlens calibrate`` writes the file (``fit_calibration`` + ``save_calibration``); ``check``, ``describe
--check``, the demo and the reports read it with ``calibration_for(model)``. With none, the verdicts use
p_c = 0.5 and say once that they are uncalibrated.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from owlens.hallucination.answers import parse_answer
from owlens.hallucination.combined import CombinedFlag, fit_combined_flag
from owlens.hallucination.flag import PresenceThreshold, calibrate_threshold
from owlens.hallucination.pope_format import object_of
from owlens.persist.atomic import atomic_write_json

__all__ = ["CALIBRATION_NAME", "Calibration", "StaleCalibrationError", "calibration_for", "fit_calibration",
           "load_calibration", "Grounding", "THRESHOLD_SOURCES", "resolve_grounding", "resolve_threshold",
           "save_calibration", "weights_digest"]

CALIBRATION_NAME = "calibration.json"
_VERSION = 1
UNCALIBRATED = 0.5  # p_c used when a model has no calibration: a guess, and said to be one
CHECK_FALSE_ALARM = 0.04  # the share of correct "yes" answers of the calibration split `check` may call ungrounded


class StaleCalibrationError(ValueError):
    """calibration.json was fitted with other weights than the W now beside it."""


@dataclass(frozen=True)
class Calibration:
    """τ (``threshold``), the combined flag (None if not fitted) and how they were obtained (``source``).

    check_cut: the combined flag's score above which ``check`` calls a named object ungrounded, chosen on the
    calibration split so that it fires on at most ``CHECK_FALSE_ALARM`` of the correct "yes" answers there
    (a caption names objects the way a "yes" asserts one; its false alarms are what a user sees as red).
    """

    threshold: PresenceThreshold
    flag: CombinedFlag | None
    weights_sha256: str | None
    source: dict = field(default_factory=dict)
    check_cut: float | None = None
    question_template: str = "is there a {} ?"  # how the calibration split asked; ``check`` asks the same

    def to_dict(self) -> dict:
        threshold = self.threshold.to_dict()
        return {"version": _VERSION, "threshold": threshold, "flag": self.flag.to_dict() if self.flag else None,
                "check_cut": self.check_cut, "check_false_alarm": CHECK_FALSE_ALARM,
                "question_template": self.question_template,
                "weights_sha256": self.weights_sha256, "source": dict(self.source)}

    @classmethod
    def from_dict(cls, payload: dict) -> Calibration:
        if not isinstance(payload, dict) or payload.get("version") != _VERSION:
            found = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"expected a calibration of version {_VERSION}; received {found!r}")
        t = payload.get("threshold") or {}
        try:
            logit = float(t["logit"])
            threshold = PresenceThreshold(logit, 1.0 / (1.0 + math.exp(-logit)),
                                          float(t.get("calibration_accuracy") or float("nan")),
                                          int(t.get("n_calibration", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"expected threshold.logit (a number) in the calibration; received {t!r}") from err
        flag = CombinedFlag.from_dict(payload["flag"]) if payload.get("flag") else None
        cut = payload.get("check_cut")
        return cls(threshold, flag, payload.get("weights_sha256"), dict(payload.get("source") or {}),
                   None if cut is None else float(cut), str(payload.get("question_template") or "is there a {} ?"))


def weights_digest(folder: str | Path) -> str | None:
    """sha256 (hex) of the ``model.safetensors`` in ``folder``, or None where there is none."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def question_template(question: str, suffix: str = "") -> str:
    """The wording of a presence question with its object as ``{}``: "Is there a dog in the image?" →
    "Is there a {} in the image?"."""
    name = object_of(question)
    start = question.rfind(name)
    return question[:start] + "{}" + question[start + len(name):] + suffix


def fit_calibration(rows: list[dict], labels: list[str], *, source: dict | None = None,
                    weights_sha256: str | None = None, suffix: str = "") -> Calibration:
    """τ and the combined flag from a calibration split's answer rows (``pope run``'s) and their labels."""
    if len(rows) != len(labels) or not rows:
        raise ValueError(f"expected one label per answer row, at least one; received {len(rows)} rows and "
                         f"{len(labels)} labels")
    logits = np.array([r["presence_logit"] for r in rows], dtype=np.float64)
    threshold = calibrate_threshold(logits, labels)
    # rows `pope run` wrote carry "parsed"; other answer files only the text, read as POPE reads it
    parsed = [r["parsed"] if "parsed" in r else parse_answer(r.get("answer", r.get("text", ""))) for r in rows]
    said_yes = np.array([p == "yes" for p in parsed])
    wrong = np.array([p != label for p, label in zip(parsed, labels)])
    flag, cut = None, None
    if 0 < wrong.sum() < wrong.size:
        p_yes = np.array([r["p_yes"] for r in rows], dtype=np.float64)
        flag = fit_combined_flag(said_yes, logits, p_yes, wrong)
        right_yes = said_yes & ~wrong
        if right_yes.any():
            scores = np.sort(flag.scores(said_yes[right_yes], logits[right_yes], p_yes[right_yes]))
            # the smallest cut with at most CHECK_FALSE_ALARM of these scores above it
            cut = float(scores[min(len(scores) - 1, int(np.ceil(len(scores) * (1 - CHECK_FALSE_ALARM))) - 1)])
    try:
        template = question_template(rows[0]["question"], suffix)
    except (KeyError, ValueError):  # no question text, or not a presence question: the toy world's wording
        template = "is there a {} ?"
    return Calibration(threshold, flag, weights_sha256, dict(source or {}), cut, template)


def save_calibration(calibration: Calibration, folder: str | Path) -> Path:
    """Write ``folder/calibration.json`` atomically; returns its path."""
    path = Path(folder) / CALIBRATION_NAME
    return atomic_write_json(path, calibration.to_dict())


def load_calibration(folder: str | Path, *, check_weights: bool = True) -> Calibration | None:
    """The calibration in ``folder``, None where there is none; stale (W changed since) raises."""
    path = Path(folder) / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from err
    if check_weights and calibration.weights_sha256 is not None:
        current = weights_digest(folder)
        if current is not None and current != calibration.weights_sha256:
            raise StaleCalibrationError(
                f"{path} was fitted with W sha256 {calibration.weights_sha256[:12]}…, but the W beside it is "
                f"{current[:12]}…: refit it with `owlens calibrate`")
    return calibration


def calibration_for(model) -> Calibration | None:
    """The calibration of a loaded J (beside its projector folder), or None (no folder, no file, or stale)."""
    folder = getattr(model, "projector_folder", None)
    if folder is None:
        return None
    try:
        return load_calibration(folder)
    except StaleCalibrationError as err:
        _say_once(f"owlens: {err}")
        return None


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(message, file=sys.stderr)


THRESHOLD_SOURCES = ("given", "calibrated", "uncalibrated")


@dataclass(frozen=True)
class Grounding:
    """How ``check`` decides that a named object is grounded.

    With the model's calibration (``source`` "calibrated") and its combined flag: the MLLM is asked the
    presence question (``question_template``) about the object, and the object is ungrounded when the flag's
    score for that "yes" passes ``cut``: both branches' evidence, as the flag weighs it. Otherwise (a τ given by
    the user, or no calibration) the detector alone: grounded ⇔ z_c > τ.
    """

    threshold: PresenceThreshold
    source: str
    flag: CombinedFlag | None = None
    cut: float | None = None
    question_template: str = "is there a {} ?"

    @property
    def combined(self) -> bool:
        return self.flag is not None and self.cut is not None


def resolve_grounding(model, threshold: float | None = None, *, log=None) -> Grounding:
    """``resolve_threshold``, and the combined flag where the model's calibration carries one."""
    tau, source = resolve_threshold(model, threshold, log=log)
    calibration = calibration_for(model) if source == "calibrated" else None
    if calibration is None:
        return Grounding(tau, source)
    return Grounding(tau, source, calibration.flag, calibration.check_cut, calibration.question_template)


def resolve_threshold(model, threshold: float | None = None, *, log=None) -> tuple[PresenceThreshold, str]:
    """τ for a verdict and where it came from (one of ``THRESHOLD_SOURCES``): ``threshold`` (a probability)
    if given, else the model's calibration, else p_c = 0.5 with one notice (through ``log``, default stderr)
    that the verdicts are uncalibrated."""
    if threshold is not None:
        return PresenceThreshold.from_probability(threshold), "given"
    calibration = calibration_for(model)
    if calibration is not None:
        return calibration.threshold, "calibrated"
    message = (f"owlens: no grounding calibration for this model (no {CALIBRATION_NAME} beside its W): verdicts use "
               f"an uncalibrated p_c > {UNCALIBRATED}; run `owlens calibrate` to fit one")
    if log is None:
        _say_once(message)
    else:
        log(message)
    return PresenceThreshold.from_probability(UNCALIBRATED), "uncalibrated"
