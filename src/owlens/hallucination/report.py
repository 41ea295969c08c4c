"""Scoring an answers file against its POPE questions: POPE's figures, then how well the flag finds errors.

Answers are paired with questions by ``question_id`` when every answer has one (a sharded, resumed or
partial run writes them in any order); otherwise line by line, as POPE's reference script pairs them — but
a length mismatch is refused here, where the reference would silently pair answer i with label i.
The answer text is read from ``answer`` (POPE's field) or ``text`` (LLaVA's answer files).

Beyond POPE, for rows the runner wrote (they hold ``presence_logit`` and ``p_yes``):
- ``presence_auroc``: OWL's p_c against the label (is the object there?);
- the flag against "the MLLM's answer was wrong", as AUROC/AP of the continuous flag score, with two
  baselines scored the same way: the detector alone (−z_c: low presence is suspect, whatever the answer)
  and the MLLM's own doubt (−|P(yes) − ½|).
The flag's τ comes from a calibration split (other questions, other images) or, failing that, from the
threshold stored in the rows, and the report says which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from owlens.hallucination.answers import parse_answer
from owlens.hallucination.calibration import fit_calibration, save_calibration, weights_digest
from owlens.hallucination.combined import CombinedFlag
from owlens.hallucination.flag import PresenceThreshold, calibrate_threshold, flag_scores, flags
from owlens.hallucination.pope_format import PopeQuestion, pair_answers, read_questions, read_rows
from owlens.hallucination.scores import PopeScores, auroc, average_precision, paired_auroc_difference, pope_scores

__all__ = ["FlagReport", "PopeReport", "score_rows", "score_files", "calibrate_on", "json_ready"]


def json_ready(payload):
    """``payload`` with every NaN (an undefined AUROC, a ratio over nothing) replaced by None, as JSON has no NaN."""
    if isinstance(payload, dict):
        return {k: json_ready(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [json_ready(v) for v in payload]
    return None if isinstance(payload, float) and math.isnan(payload) else payload


@dataclass(frozen=True)
class FlagReport:
    """The flag against "the answer was wrong" (AUROC/AP higher is better; NaN when nothing was wrong).

    flag_precision / flag_recall: of the binary flag at ``threshold``; ``calibrated`` tells whether τ was
    chosen on a calibration split (True) or read from the rows (False: a fixed, unchosen τ).
    """

    threshold: PresenceThreshold
    calibrated: bool
    n_wrong: int
    n_flagged: int
    flag_precision: float
    flag_recall: float
    flag_auroc: float
    flag_ap: float
    presence_only_auroc: float
    presence_only_ap: float
    mllm_doubt_auroc: float
    mllm_doubt_ap: float
    # The combined flag (``combined.py``, fitted on a calibration split), when one was given; NaN otherwise.
    combined_auroc: float = float("nan")
    combined_ap: float = float("nan")
    combined_n_flagged: int = 0
    combined_precision: float = float("nan")
    combined_recall: float = float("nan")
    # AUROC(combined) − AUROC(MLLM doubt), with the 95% paired bootstrap interval over questions.
    combined_minus_doubt_auroc: tuple[float, float, float] = (float("nan"),) * 3

    def to_dict(self) -> dict:
        return json_ready({**asdict(self), "threshold": self.threshold.to_dict()})


@dataclass(frozen=True)
class PopeReport:
    """POPE's figures over the answered questions; ranking figures when the rows carry the detector's scores."""

    pope: PopeScores
    n_questions: int
    n_answered: int
    presence_auroc: float
    p_yes_auroc: float
    flag: FlagReport | None

    def to_dict(self) -> dict:
        payload = {"pope": self.pope.to_dict(), "n_questions": self.n_questions, "n_answered": self.n_answered,
                   "presence_auroc": self.presence_auroc, "p_yes_auroc": self.p_yes_auroc}
        return json_ready({**payload, "flag": self.flag.to_dict() if self.flag else None})


def _answer_text(row: dict, index: int) -> str:
    for key in ("answer", "text"):
        if isinstance(row.get(key), str):
            return row[key]
    raise ValueError(f"answer {index + 1}: expected an 'answer' (or 'text') string; received keys {sorted(row)}")


def _has_scores(rows: list[dict]) -> bool:
    return bool(rows) and all("presence_logit" in row and "p_yes" in row for row in rows)


def calibrate_on(rows: list[dict], questions: list[PopeQuestion]) -> PresenceThreshold:
    """τ chosen on a calibration split's answer rows (they must carry ``presence_logit``)."""
    rows, questions = pair_answers(rows, questions)
    if not _has_scores(rows):
        raise ValueError("the calibration answers carry no presence_logit: expected a file `owlens pope run` wrote")
    return calibrate_threshold([row["presence_logit"] for row in rows], [q.label for q in questions])


def _flag_report(rows, parsed, labels, threshold: PresenceThreshold, calibrated: bool,
                 combined: CombinedFlag | None = None) -> FlagReport:
    said_yes = np.array([p == "yes" for p in parsed])
    wrong = np.array([p != label for p, label in zip(parsed, labels)])
    logits = np.array([row["presence_logit"] for row in rows], dtype=np.float64)
    doubt = -np.abs(np.array([row["p_yes"] for row in rows], dtype=np.float64) - 0.5)
    flagged, score = flags(said_yes, logits, threshold), flag_scores(said_yes, logits, threshold)
    hits = int((flagged & wrong).sum())
    extra = {}
    if combined is not None:
        chance = np.array([row["p_yes"] for row in rows], dtype=np.float64)
        joint, raised = combined.scores(said_yes, logits, chance), combined.flags(said_yes, logits, chance)
        caught = int((raised & wrong).sum())
        extra = {"combined_auroc": auroc(joint, wrong), "combined_ap": average_precision(joint, wrong),
                 "combined_n_flagged": int(raised.sum()),
                 "combined_precision": caught / raised.sum() if raised.any() else float("nan"),
                 "combined_recall": caught / wrong.sum() if wrong.any() else float("nan"),
                 "combined_minus_doubt_auroc": paired_auroc_difference(joint, doubt, wrong)
                 if 0 < wrong.sum() < wrong.size else (float("nan"),) * 3}
    return FlagReport(**extra,
        threshold=threshold, calibrated=calibrated, n_wrong=int(wrong.sum()), n_flagged=int(flagged.sum()),
        flag_precision=hits / flagged.sum() if flagged.any() else float("nan"),
        flag_recall=hits / wrong.sum() if wrong.any() else float("nan"),
        flag_auroc=auroc(score, wrong), flag_ap=average_precision(score, wrong),
        presence_only_auroc=auroc(-logits, wrong), presence_only_ap=average_precision(-logits, wrong),
        mllm_doubt_auroc=auroc(doubt, wrong), mllm_doubt_ap=average_precision(doubt, wrong))


def score_rows(rows: list[dict], questions: list[PopeQuestion],
               threshold: PresenceThreshold | None = None, combined: CombinedFlag | None = None) -> PopeReport:
    """Score answer rows against their questions; ``threshold`` is a calibrated τ (else the rows' own),
    ``combined`` a combined flag fitted on a calibration split (scored beside the disagreement flag)."""
    if any(q.label is None for q in questions):
        raise ValueError("the question file has questions without a label: expected 'yes'/'no' labels to score")
    answered, asked = pair_answers(rows, questions)
    parsed = [parse_answer(_answer_text(row, i)) for i, row in enumerate(answered)]
    labels = [q.label for q in asked]
    report = {"pope": pope_scores(parsed, labels), "n_questions": len(questions), "n_answered": len(answered),
              "presence_auroc": float("nan"), "p_yes_auroc": float("nan"), "flag": None}
    if _has_scores(answered):
        truth = [label == "yes" for label in labels]
        report["presence_auroc"] = auroc([row["presence_logit"] for row in answered], truth)
        report["p_yes_auroc"] = auroc([row["p_yes"] for row in answered], truth)
        calibrated = threshold is not None
        if threshold is None:
            stored = {row.get("threshold") for row in answered}
            if len(stored) != 1 or None in stored:
                raise ValueError(f"the rows were flagged at several thresholds {sorted(map(str, stored))}: pass a "
                                 "calibration split to choose one")
            threshold = PresenceThreshold.from_probability(stored.pop())
        report["flag"] = _flag_report(answered, parsed, labels, threshold, calibrated, combined)
    return PopeReport(**report)


def _overlap(a: list[PopeQuestion], b: list[PopeQuestion]) -> int:
    return len({(q.image, q.text) for q in a} & {(q.image, q.text) for q in b})


def score_files(answers: str | Path, questions: str | Path, *,
                calibration: tuple[str | Path, str | Path] | None = None,
                save_calibration_to: str | Path | None = None) -> PopeReport:
    """Score an answers file; ``calibration`` = (answers, questions) of another split to choose τ and fit the
    combined flag on; ``save_calibration_to``: also write that calibration there (a model's projector folder)."""
    asked = list(read_questions(questions))
    threshold, combined = None, None
    if calibration is not None:
        calibration_questions = list(read_questions(calibration[1]))
        shared = _overlap(asked, calibration_questions)
        if shared:
            raise ValueError(f"the calibration split shares {shared} questions (image and text) with the split being "
                             "scored; τ must be chosen on other questions, never on the test split")
        rows, paired = pair_answers(read_rows(calibration[0]), calibration_questions)
        if not _has_scores(rows):
            raise ValueError("the calibration answers carry no presence_logit: expected a file `owlens pope run` "
                             "wrote")
        fitted = fit_calibration(rows, [q.label for q in paired], source={"answers": str(calibration[0]),
                                                                           "questions": str(calibration[1])},
                                 weights_sha256=weights_digest(save_calibration_to) if save_calibration_to else None)
        threshold, combined = fitted.threshold, fitted.flag
        if save_calibration_to is not None:
            save_calibration(fitted, save_calibration_to)
    elif save_calibration_to is not None:
        raise ValueError("expected --calibrate CAL_ANSWERS CAL_QUESTIONS with a folder to save a calibration to")
    return score_rows(read_rows(answers), asked, threshold, combined)
