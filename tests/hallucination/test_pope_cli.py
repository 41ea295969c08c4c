"""The hallucination commands end to end on tiny checkpoints: pope toy/run/score, evaluate hallucination."""

import json

import pytest

from owlens.cli import main
from owlens.hallucination.pope_format import PopeQuestion, write_questions


def _model(paths):
    return ["--owl", paths["owl"], "--mllm", paths["mllm"], "--projector", paths["projector"], "--device", "cpu"]


def test_pope_toy_run_and_score(tiny_checkpoints, tmp_path, capsys):
    assert main(["pope", "toy", str(tmp_path / "toy"), "--images", "3", "--calibration-images", "2"]) == 0
    files = json.loads(capsys.readouterr().out)["questions"]
    answers = {}
    for split in ("adversarial", "calibration"):
        answers[split] = tmp_path / f"{split}.jsonl"
        assert main(["pope", "run", files[split], "--images", str(tmp_path / "toy" / "images"), "--out",
                     str(answers[split]), "--max-new-tokens", "2", "--no-progress", *_model(tiny_checkpoints)]) == 0
    capsys.readouterr()
    assert main(["pope", "score", str(answers["adversarial"]), files["adversarial"], "--json", "--calibrate",
                 str(answers["calibration"]), files["calibration"]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["pope"]) >= {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert report["flag"]["calibrated"] is True and 0 <= report["flag"]["threshold"]["probability"] <= 1
    assert main(["pope", "score", str(answers["adversarial"]), files["adversarial"]]) == 0
    assert "uncalibrated" in capsys.readouterr().out


def test_pope_score_on_a_plain_answers_file(tmp_path, capsys):
    write_questions(tmp_path / "q.json", [PopeQuestion(1, "a.jpg", "Is there a cat in the image?", "yes"),
                                          PopeQuestion(2, "a.jpg", "Is there a dog in the image?", "no")])
    (tmp_path / "a.jsonl").write_text('{"question_id": 2, "answer": "No."}\n{"question_id": 1, "answer": "NO"}\n')
    assert main(["pope", "score", str(tmp_path / "a.jsonl"), str(tmp_path / "q.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy: 1.0000" in out and "TP 1  FP 0  TN 1  FN 0" in out  # "NO" is a yes for POPE
    assert main(["pope", "score", str(tmp_path / "none.jsonl"), str(tmp_path / "q.json")]) == 2


def test_pope_run_reports_a_missing_images_folder(tiny_checkpoints, tmp_path, capsys):
    write_questions(tmp_path / "q.json", [PopeQuestion(1, "a.jpg", "Is there a cat in the image?", "yes")])
    code = main(["pope", "run", str(tmp_path / "q.json"), "--images", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "a.jsonl"), *_model(tiny_checkpoints)])
    assert code == 2 and "images folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [False, True])
def test_evaluate_hallucination_prints_the_promised_keys(tiny_checkpoints, tmp_path, capsys, keep):
    out = ["--out", str(tmp_path / "run")] if keep else []
    assert main(["evaluate", "hallucination", "--seed", "0", "--json", "--images", "4", "--calibration-images", "2",
                 "--captions", "2", "--no-progress", *out, *_model(tiny_checkpoints)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["pope"]) == {"random", "popular", "adversarial"}
    assert set(payload["pope"]["adversarial"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert {"presence_auroc", "flag_auroc", "flag_ap", "injected", "chair", "threshold", "mllm_doubt_auroc",
            "detector_auroc", "flag_minus_doubt_auroc", "check", "disagreement_flag_auroc"} <= set(payload)
    assert (tmp_path / "run" / "answers_adversarial.jsonl").is_file() == keep


def test_a_saved_calibration_is_what_check_and_describe_use(tiny_checkpoints, tmp_path, capsys, image):
    import shutil

    projector = tmp_path / "w"
    shutil.copytree(tiny_checkpoints["projector"], projector)
    model = {**tiny_checkpoints, "projector": str(projector)}
    assert main(["pope", "toy", str(tmp_path / "toy"), "--images", "3", "--calibration-images", "3"]) == 0
    files = json.loads(capsys.readouterr().out)["questions"]
    answers = {}
    for split in ("adversarial", "calibration"):
        answers[split] = tmp_path / f"{split}.jsonl"
        assert main(["pope", "run", files[split], "--images", str(tmp_path / "toy" / "images"), "--out",
                     str(answers[split]), "--max-new-tokens", "2", "--no-progress", *_model(model)]) == 0
    check = ["check", image, "--prompt", "is there a star ?", "--vocabulary", "toy", "--json", "--max-new-tokens",
             "2", *_model(model)]
    capsys.readouterr()
    assert main(check) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["threshold_source"] == "uncalibrated" and first["threshold"] == 0.5
    assert main(["pope", "score", str(answers["adversarial"]), files["adversarial"], "--json", "--calibrate",
                 str(answers["calibration"]), files["calibration"], "--save-calibration", str(projector)]) == 0
    tau = json.loads(capsys.readouterr().out)["flag"]["threshold"]["probability"]
    assert (projector / "calibration.json").is_file()
    assert main(check) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["threshold_source"] == "calibrated" and payload["threshold"] == pytest.approx(tau)
    assert main([*check, "--threshold", "0.9"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == pytest.approx(0.9)
    assert main(["describe", image, "--prompt", "is there a star ?", "--check", "--json", "--max-new-tokens", "2",
                 "--vocabulary", "toy", *_model(model)]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["threshold_source"] == "calibrated" and described["threshold"] == pytest.approx(tau)
