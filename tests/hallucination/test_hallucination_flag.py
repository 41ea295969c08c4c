"""The flag: τ chosen for the detector on calibration data, the signed margin, and their agreement."""

import math

import numpy as np
import pytest

from owlens.hallucination.flag import PresenceThreshold, calibrate_threshold, flag_scores, flags


def test_threshold_separates_calibration_data():
    threshold = calibrate_threshold([-3.0, -1.0, 0.5, 2.0], ["no", "no", "yes", "yes"])
    assert threshold.logit == pytest.approx(-0.25) and threshold.calibration_accuracy == 1.0
    assert threshold.probability == pytest.approx(1 / (1 + math.exp(0.25))) and threshold.n_calibration == 4


def test_threshold_with_overlap_ties_and_ends():
    # 0 → no, 1 tied yes/no, 2 → yes, 3 → no: best is "present ⇔ z > 0.5" (accuracy 3/5) — or "> 1.5", also 3/5;
    # the first best is kept.
    threshold = calibrate_threshold([0.0, 1.0, 1.0, 2.0, 3.0], [False, True, False, True, False])
    assert threshold.logit == pytest.approx(0.5) and threshold.calibration_accuracy == pytest.approx(0.6)
    assert calibrate_threshold([1.0, 2.0], ["yes", "yes"]).logit == pytest.approx(0.0)  # below every value
    assert calibrate_threshold([1.0, 2.0], ["no", "no"]).logit == pytest.approx(3.0)  # above every value
    with pytest.raises(ValueError, match="one label per presence logit"):
        calibrate_threshold([1.0], ["yes", "no"])


def test_flag_is_the_positive_margin_against_the_answer():
    threshold = PresenceThreshold.from_probability(0.5)  # logit 0
    said_yes = np.array([True, True, False, False])
    logits = np.array([2.0, -1.0, 3.0, -2.0])
    assert flags(said_yes, logits, threshold).tolist() == [False, True, True, False]
    assert flag_scores(said_yes, logits, threshold).tolist() == [-2.0, 1.0, 3.0, -2.0]
    rng = np.random.default_rng(0)
    said_yes, logits = rng.random(200) < 0.5, rng.normal(size=200)
    assert np.array_equal(flags(said_yes, logits, threshold), flag_scores(said_yes, logits, threshold) > 0)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_fixed_threshold_must_be_a_probability(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        PresenceThreshold.from_probability(bad)
