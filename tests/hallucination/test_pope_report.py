"""Scoring files: pairing by id or by line, the flag's AUROC/AP against wrong answers, and τ from calibration."""

import json

import pytest

from owlens.hallucination.pope_format import PopeQuestion, write_questions
from owlens.hallucination.report import score_files, score_rows


def _questions(labels):
    return [PopeQuestion(i + 1, f"{i // 2}.jpg", "Is there a dog in the image?", label)
            for i, label in enumerate(labels)]


def _rows(answers, logits, ids=None):
    ids = ids or list(range(1, len(answers) + 1))
    return [{"question_id": i, "answer": a, "presence_logit": z, "p_yes": 0.9 if a == "yes" else 0.1,
             "threshold": 0.5} for i, a, z in zip(ids, answers, logits)]


def test_flag_scores_find_the_wrong_answers():
    labels = ["yes", "no", "yes", "no", "no", "yes"]
    answers = ["yes", "yes", "no", "no", "yes", "yes"]  # wrong: 2 (a hallucination), 3 (a miss), 5
    logits = [3.0, -2.0, 2.0, -3.0, 1.0, 0.5]  # the detector sees 2 and 3 right; 5 fools it (z = 1 > 0)
    report = score_rows(_rows(answers, logits), _questions(labels))
    flag = report.flag
    assert not flag.calibrated and flag.n_wrong == 3 and flag.n_flagged == 2
    assert flag.flag_precision == 1.0 and flag.flag_recall == pytest.approx(2 / 3)
    # flag scores: yes→−z, no→z: [-3, 2, 2, -3, -1, -0.5]; wrong = [0, 1, 1, 0, 1, 0]
    assert flag.flag_auroc == pytest.approx(8 / 9) and report.presence_auroc == pytest.approx(8 / 9)
    assert report.pope.accuracy == 0.5 and report.n_answered == 6


def test_pairing_by_id_tolerates_order_and_gaps_but_not_strangers():
    labels = ["yes", "no", "yes", "no"]
    rows = _rows(["no", "yes", "yes"], [0.0, 1.0, 2.0], ids=[4, 1, 3])
    report = score_rows(rows, _questions(labels))
    assert report.n_answered == 3 and report.n_questions == 4 and report.pope.accuracy == 1.0
    with pytest.raises(ValueError, match="question ids the question file does not hold"):
        score_rows(_rows(["yes"], [0.0], ids=[9]), _questions(labels))
    with pytest.raises(ValueError, match="repeat a question id"):
        score_rows(_rows(["yes", "no"], [0.0, 0.0], ids=[1, 1]), _questions(labels))


def test_pairing_by_line_without_ids_like_the_reference():
    rows = [{"text": "Yes"}, {"text": "No, there is none."}]
    report = score_rows(rows, _questions(["yes", "no"]))
    assert report.pope.accuracy == 1.0 and report.flag is None
    with pytest.raises(ValueError, match="expected 2 answers"):
        score_rows(rows[:1], _questions(["yes", "no"]))


def test_calibration_chooses_tau_on_other_questions_only(tmp_path):
    def write(name, questions, rows):
        write_questions(tmp_path / f"{name}_q.json", questions)
        (tmp_path / f"{name}_a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / f"{name}_a.jsonl", tmp_path / f"{name}_q.json"

    test = write("test", _questions(["yes", "no"]), _rows(["yes", "yes"], [3.5, 1.5]))
    other = [PopeQuestion(i + 1, f"cal{i}.jpg", "Is there a dog in the image?", label)
             for i, label in enumerate(["yes", "no", "yes", "no"])]
    calibration = write("cal", other, _rows(["yes", "no", "yes", "no"], [4.0, 2.0, 5.0, 1.0]))
    report = score_files(*test, calibration=calibration)
    assert report.flag.calibrated and report.flag.threshold.logit == pytest.approx(3.0)
    assert report.flag.n_flagged == 1 and report.flag.n_wrong == 1 and report.flag.flag_auroc == 1.0
    with pytest.raises(ValueError, match="never on the test split"):
        score_files(*test, calibration=test)
