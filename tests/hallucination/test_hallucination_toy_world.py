"""The bar on the shipped toy world: the flag finds the model's wrong answers on the adversarial split."""

import math

import pytest


@pytest.mark.toy_weights
def test_the_flag_finds_the_wrong_answers_on_the_adversarial_split(tmp_path):
    from owlens.evaluation.hallucination_validation import validate_hallucination
    from owlens.models.joint import JointModel

    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    result = validate_hallucination(model, tmp_path, seed=1, n_images=50, calibration_images=40, caption_images=0,
                          log=lambda *_: None).to_dict()
    assert result["flag_auroc"] >= 0.9 and result["presence_auroc"] >= 0.9
    injected = result["injected"]
    assert injected["n_questions"] > 0 and not math.isnan(injected["mean_presence"])
    assert injected["mean_presence"] < result["threshold"]["probability"]  # the detector is not fooled by the prior


@pytest.mark.toy_weights
def test_a_rerun_into_the_same_out_resumes_and_a_small_run_prints_its_summary(tmp_path, capsys):
    from owlens.cli import main

    argv = ["evaluate", "hallucination", "--scenes", "6", "--calibration-images", "20", "--captions", "3",
            "--seed", "5", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    # With 3 captions nothing may be hallucinated: a rate with nothing to count reads "n/a", not a traceback.
    assert "check on captions" in first
    assert main(argv) == 0  # the second run finds its answers and resumes
    assert capsys.readouterr().out == first
