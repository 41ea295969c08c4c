"""A model's calibration: the combined flag's fit, the file beside W, and who reads it (or the notice)."""

import json

import numpy as np
import pytest
import torch

from owlens.hallucination.calibration import (
    CALIBRATION_NAME,
    Calibration,
    StaleCalibrationError,
    fit_calibration,
    load_calibration,
    question_template,
    resolve_grounding,
    resolve_threshold,
    save_calibration,
    weights_digest,
)
from owlens.hallucination.combined import CombinedFlag, features, fit_combined_flag
from owlens.hallucination.flag import PresenceThreshold
from owlens.hallucination.scores import auroc, paired_auroc_difference


def _synthetic(n=4000, seed=0):
    """Answers wrong with a known logistic law in the features (so the fit has a truth to recover)."""
    rng = np.random.default_rng(seed)
    said_yes = rng.random(n) < 0.5
    z = rng.normal(0, 2, n)
    p = 1 / (1 + np.exp(-rng.normal(0, 3, n)))
    x = features(said_yes, z, p)
    truth = np.array([0.5, -1.0, 1.0, -0.5, 0.5])
    wrong = rng.random(n) < 1 / (1 + np.exp(-(x @ truth - 1.0)))
    return said_yes, z, p, wrong, truth


def test_the_fit_recovers_a_known_logistic_law():
    said_yes, z, p, wrong, truth = _synthetic()
    flag = fit_combined_flag(said_yes, z, p, wrong, ridge=1e-6)
    raw = np.asarray(flag.coefficients) / np.asarray(flag.scale)  # back to the unstandardised features
    np.testing.assert_allclose(raw, truth, atol=0.15)
    assert flag.n_calibration == 4000 and flag.n_wrong == int(wrong.sum())
    # its scores rank the errors as the true law does
    x = features(said_yes, z, p)
    assert auroc(flag.scores(said_yes, z, p), wrong) == pytest.approx(auroc(x @ truth, wrong), abs=0.005)
    assert CombinedFlag.from_dict(json.loads(json.dumps(flag.to_dict()))) == flag


def test_the_fit_refuses_a_split_without_errors():
    with pytest.raises(ValueError, match="wrong and right answers"):
        fit_combined_flag([True, False], [1.0, -1.0], [0.9, 0.1], [False, False])


def test_paired_auroc_difference_is_the_difference_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    target = rng.random(600) < 0.3
    good, poor = target + rng.normal(0, 0.5, 600), target + rng.normal(0, 2.0, 600)
    difference, lo, hi = paired_auroc_difference(good, poor, target, resamples=500)
    assert difference == pytest.approx(auroc(good, target) - auroc(poor, target))
    assert 0 < lo < difference < hi
    same = paired_auroc_difference(good, good, target, resamples=50)
    assert same == (0.0, 0.0, 0.0)


def _rows(n=400, seed=0):
    said_yes, z, p, wrong, _ = _synthetic(n, seed)
    labels = ["no" if (a == w) else "yes" for a, w in zip(said_yes, wrong)]  # wrong ⇔ answer ≠ label
    rows = [{"question": "is there a star ?", "parsed": "yes" if a else "no", "presence_logit": float(zz),
             "p_yes": float(pp)} for a, zz, pp in zip(said_yes, z, p)]
    return rows, labels


def test_calibration_round_trips_and_is_refused_once_w_changes(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"W one")
    rows, labels = _rows()
    fitted = fit_calibration(rows, labels, weights_sha256=weights_digest(tmp_path), source={"toy_seed": 7})
    assert fitted.check_cut is not None and fitted.question_template == "is there a {} ?"
    save_calibration(fitted, tmp_path)
    loaded = load_calibration(tmp_path)
    assert loaded.threshold.logit == fitted.threshold.logit and loaded.flag == fitted.flag
    assert loaded.check_cut == fitted.check_cut and loaded.source == {"toy_seed": 7}
    (tmp_path / "model.safetensors").write_bytes(b"W two")
    with pytest.raises(StaleCalibrationError, match="refit it with `owlens calibrate`"):
        load_calibration(tmp_path)
    assert load_calibration(tmp_path / "elsewhere") is None


def test_the_check_cut_keeps_false_alarms_on_correct_yes_answers_under_the_target():
    from owlens.hallucination.calibration import CHECK_FALSE_ALARM

    rows, labels = _rows(2000)
    fitted = fit_calibration(rows, labels)
    right_yes = [r for r, label in zip(rows, labels) if r["parsed"] == "yes" and label == "yes"]
    scores = fitted.flag.scores(np.ones(len(right_yes), bool), [r["presence_logit"] for r in right_yes],
                                [r["p_yes"] for r in right_yes])
    assert (scores > fitted.check_cut).mean() <= CHECK_FALSE_ALARM
    assert (scores >= fitted.check_cut).mean() > CHECK_FALSE_ALARM - 0.01  # the cut is not needlessly high


def test_question_template():
    assert question_template("Is there a dining table in the image?") == "Is there a {} in the image?"
    assert question_template("is there a star ?", "\nAnswer.") == "is there a {} ?\nAnswer."


class _Model:
    def __init__(self, folder):
        self.projector_folder = folder


def test_threshold_resolution_order_and_the_one_notice(tmp_path, capsys, monkeypatch):
    from owlens.hallucination import calibration

    # As in a fresh process: an earlier test in this one may have printed the notice already.
    monkeypatch.setattr(calibration, "_SAID", set())
    rows, labels = _rows()
    messages = []
    tau, source = resolve_threshold(_Model(tmp_path), log=messages.append)
    assert (tau.probability, source) == (0.5, "uncalibrated") and "uncalibrated" in messages[0]
    save_calibration(fit_calibration(rows, labels), tmp_path)
    tau, source = resolve_threshold(_Model(tmp_path))
    assert source == "calibrated" and tau.logit == load_calibration(tmp_path).threshold.logit
    assert resolve_threshold(_Model(tmp_path), 0.7)[0].probability == pytest.approx(0.7)  # --threshold wins
    assert resolve_grounding(_Model(tmp_path)).combined and not resolve_grounding(_Model(tmp_path), 0.7).combined
    # the stderr notice is printed once per process, however many verdicts follow
    resolve_threshold(_Model(None))
    resolve_threshold(_Model(None))
    assert capsys.readouterr().err.count("uncalibrated") == 1


def test_a_bad_file_says_what_was_expected(tmp_path):
    (tmp_path / CALIBRATION_NAME).write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="expected a calibration of version 1; received 99"):
        load_calibration(tmp_path)
    with pytest.raises(ValueError, match="threshold.logit"):
        Calibration.from_dict({"version": 1, "threshold": {}})


def test_the_shipped_toy_world_carries_its_own_calibration():
    from owlens.models.loading import toy_checkpoints

    folder = toy_checkpoints()["projector"]
    calibration = load_calibration(folder)  # raises if it does not match the shipped W
    assert calibration is not None, f"expected {folder / CALIBRATION_NAME}: run `owlens calibrate`"
    assert calibration.flag is not None and calibration.check_cut is not None
    assert calibration.source.get("toy_seed") == 1000 and 0.05 < calibration.threshold.probability < 0.95


def test_check_uses_the_combined_flag_with_the_mllm_asked(tiny_model_args, image, tmp_path):
    from owlens.hallucination.calibration import Grounding
    from owlens.hallucination.check import ground
    from owlens.models.joint import JointModel

    model = JointModel.from_pretrained(owl=tiny_model_args[1], mllm=tiny_model_args[3],
                                       projector=tiny_model_args[5], device="cpu")
    rows, labels = _rows()
    calibration = fit_calibration(rows, labels)
    with torch.no_grad():
        embedding = model.encode_images(image)
    names = ["circle", "star"]
    grounding = Grounding(calibration.threshold, "calibrated", calibration.flag, calibration.check_cut)
    combined = ground(model, embedding, names, (64, 48), grounding)
    alone = ground(model, embedding, names, (64, 48), calibration.threshold)
    assert all(v.p_yes is not None and 0 < v.p_yes < 1 for v in combined)
    assert all(v.p_yes is None and v.grounded == (v.presence_logit > calibration.threshold.logit) for v in alone)
    for v in combined:
        expected = calibration.flag.scores([True], [v.presence_logit], [v.p_yes])[0]
        assert v.flag_score == pytest.approx(expected) and v.grounded == (expected <= calibration.check_cut)
    assert isinstance(calibration.threshold, PresenceThreshold)
