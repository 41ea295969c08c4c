"""The toy-world check of hallucination detection (docs/design.md §6): does the flag find the injected hallucinations?

Builds toy POPE files (``toy_pope.py``), runs the POPE runner on the calibration split and the three test
splits, chooses τ on the calibration split only, and scores each test split. It then looks at the injected
defect itself — "is there a star ?" asked of scenes with a cross and no star — and at free captions (CHAIR,
with the detector's verdict on every object a caption names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from owlens.evaluation.toy_pope import SPLITS, build_toy_pope
from owlens.hallucination.calibration import Calibration, Grounding, fit_calibration
from owlens.hallucination.chair import ChairResult, chair, read_toy_truth
from owlens.hallucination.check import ground
from owlens.hallucination.flag import PresenceThreshold
from owlens.hallucination.pope_format import pair_answers, read_questions, read_rows
from owlens.hallucination.report import PopeReport, json_ready, score_rows
from owlens.hallucination.runner import PopeRunConfig, run_pope
from owlens.hallucination.scores import auroc
from owlens.results import FieldsResult
from owlens.toyworld.defects import COOCCUR_CUE, COOCCUR_PARTNER
from owlens.toyworld.text import CAPTION_QUESTION, toy_vocabulary
from owlens.toyworld.world import IMAGE_SIZE

__all__ = ["InjectedDefect", "CaptionCheck", "ObjectCheck", "HallucinationValidation", "validate_hallucination"]


@dataclass(frozen=True)
class InjectedDefect(FieldsResult):
    """The adversarial questions about the co-occurrence partner on scenes with the cue and without it.

    yes_rate: how often the MLLM hallucinates it; flagged_rate: the share of those hallucinations flagged (at the
    calibrated τ);
    mean_presence: OWL's mean p_c for the partner there (low ⇔ the detector is not fooled by the prior).
    """

    n_questions: int
    yes_rate: float
    flagged_rate: float
    mean_presence: float


@dataclass(frozen=True)
class CaptionCheck:
    """CHAIR of free captions, and whether the detector's verdicts find the hallucinated mentions
    (``detector_auroc``: −z_c against "hallucinated", over all mentions; NaN if none was hallucinated)."""

    chair: ChairResult
    detector_auroc: float
    ungrounded_hallucinated: float  # share of hallucinated mentions the detector calls ungrounded
    ungrounded_correct: float  # share of correct mentions it calls ungrounded (false alarms)

    def to_dict(self) -> dict:
        return {"chair_s": self.chair.chair_s, "chair_i": self.chair.chair_i, **self.chair.to_dict(),
                "detector_auroc": self.detector_auroc, "ungrounded_hallucinated": self.ungrounded_hallucinated,
                "ungrounded_correct": self.ungrounded_correct}


@dataclass(frozen=True)
class ObjectCheck(FieldsResult):
    """``check``'s verdicts on the objects held-out captions name, as a user sees them (the calibration's τ and
    combined flag): how many correct objects it calls ungrounded, how many hallucinated ones it catches."""

    objects: int
    false_ungrounded_rate: float
    hallucinated: int
    hallucinated_flagged_rate: float


@dataclass(frozen=True)
class HallucinationValidation:
    """Everything ``owlens evaluate hallucination`` prints; the headline figures are the adversarial split's.

    flag_auroc / flag_ap: the combined flag (both branches, fitted on the calibration split); the paper's
    disagreement flag and each single signal are reported beside it as baselines.
    """

    seed: int
    calibration: Calibration
    reports: dict[str, PopeReport]
    injected: InjectedDefect
    captions: CaptionCheck | None
    check: ObjectCheck | None = None

    @property
    def threshold(self) -> PresenceThreshold:
        return self.calibration.threshold

    def to_dict(self) -> dict:
        adversarial = self.reports["adversarial"].to_dict()
        flag = adversarial["flag"]
        pope = {split: {k: getattr(r.pope, k) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
                for split, r in self.reports.items()}
        return json_ready({
            "pope": pope, "presence_auroc": adversarial["presence_auroc"],
            "flag_auroc": flag["combined_auroc"], "flag_ap": flag["combined_ap"],
            "disagreement_flag_auroc": flag["flag_auroc"], "disagreement_flag_ap": flag["flag_ap"],
            "mllm_doubt_auroc": flag["mllm_doubt_auroc"], "detector_auroc": flag["presence_only_auroc"],
            "flag_minus_doubt_auroc": list(flag["combined_minus_doubt_auroc"]),
            "check": self.check.to_dict() if self.check else None,
            "seed": self.seed, "threshold": self.threshold.to_dict(), "calibration": self.calibration.to_dict(),
            "splits": {split: r.to_dict() for split, r in self.reports.items()},
            "injected": self.injected.to_dict(), "chair": self.captions.to_dict() if self.captions else None})


def _injected(rows: list[dict], truth_path: Path, threshold: PresenceThreshold) -> InjectedDefect:
    truth = read_toy_truth(truth_path)
    chosen = [r for r in rows if r["object"] == COOCCUR_PARTNER and COOCCUR_CUE in truth[r["image"]]
              and COOCCUR_PARTNER not in truth[r["image"]]]
    yes = [r for r in chosen if r["parsed"] == "yes"]
    return InjectedDefect(len(chosen), len(yes) / len(chosen) if chosen else float("nan"),
                          sum(r["presence_logit"] <= threshold.logit for r in yes) / len(yes) if yes else float("nan"),
                          float(np.mean([r["presence"] for r in chosen])) if chosen else float("nan"))


@torch.no_grad()
def _captions(model, images: Path, truth: dict[str, set[str]], names: list[str], grounding: Grounding,
              batch_size: int) -> tuple[CaptionCheck, ObjectCheck]:
    vocabulary, texts, verdicts = toy_vocabulary(), [], []
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        embedding = model.encode_images([images / n for n in chunk])  # (B, 1+N, d)
        prompts = [model.processor.chat(CAPTION_QUESTION)] * len(chunk)
        generated = model.generate(embedding, prompts, max_new_tokens=40).texts
        texts += generated
        for i, text in enumerate(generated):
            found = ground(model, embedding[i:i + 1], vocabulary.mentions(text), (IMAGE_SIZE, IMAGE_SIZE),
                           grounding)
            verdicts += [(v, v.name not in truth[chunk[i]]) for v in found]
    result = chair(texts, [truth[n] for n in names], vocabulary)
    hallucinated = np.array([h for _, h in verdicts], dtype=bool)
    logits = np.array([v.presence_logit for v, _ in verdicts], dtype=np.float64)
    below = logits <= grounding.threshold.logit  # the detector alone at τ (CHAIR's figures, as before)
    flagged = np.array([not v.grounded for v, _ in verdicts], dtype=bool)  # what `check` says

    def share(ungrounded: np.ndarray, mask: np.ndarray) -> float:
        return float(ungrounded[mask].mean()) if mask.any() else float("nan")

    captions = CaptionCheck(result, auroc(-logits, hallucinated) if verdicts else float("nan"),
                            share(below, hallucinated), share(below, ~hallucinated))
    return captions, ObjectCheck(len(verdicts), share(flagged, ~hallucinated), int(hallucinated.sum()),
                                 share(flagged, hallucinated))


def validate_hallucination(model, folder: str | Path, *, seed: int = 0, n_images: int = 500,
                           calibration_images: int = 200, caption_images: int = 200, batch_size: int = 64,
                           progress: bool = False, log=print) -> HallucinationValidation:
    """Build the toy POPE files in ``folder`` (answers land there too, so a rerun resumes) and score them."""
    files = build_toy_pope(folder, seed=seed, n_images=n_images, calibration_images=calibration_images)
    config = PopeRunConfig(batch_size=batch_size, max_new_tokens=4)  # toy answers are "yes"/"no" then </s>
    answers = {}
    for split, questions in files.questions.items():
        answers[split] = files.folder / f"answers_{split}.jsonl"
        run_pope(model, questions, files.images, answers[split], config, progress=progress, log=log)
    rows, asked = pair_answers(read_rows(answers["calibration"]), list(read_questions(files.questions["calibration"])))
    calibration = fit_calibration(rows, [q.label for q in asked], source={"toy_seed": seed,
                                                                         "toy_images": calibration_images})
    threshold = calibration.threshold
    reports = {split: score_rows(read_rows(answers[split]), list(read_questions(files.questions[split])), threshold,
                                 calibration.flag)
               for split in SPLITS}
    captions, checked = None, None
    if caption_images > 0:
        truth = read_toy_truth(files.truth)
        names = sorted(n for n in truth if "_test_" in n)[:caption_images]
        grounding = Grounding(threshold, "calibrated", calibration.flag, calibration.check_cut,
                              calibration.question_template)
        captions, checked = _captions(model, files.images, truth, names, grounding, batch_size)
    return HallucinationValidation(seed, calibration, reports,
                         _injected(read_rows(answers["adversarial"]), files.truth, threshold), captions, checked)
