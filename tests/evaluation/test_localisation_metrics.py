"""Pointing game, relevance mass and rank accuracy, and the cue score on maps with hand-computed answers."""

import numpy as np
import pytest
import torch

from owlens.evaluation import CuePointing, MassAccuracy, PointingGame, RankAccuracy


def _mask(shape, *pixels):
    mask = np.zeros(shape, dtype=bool)
    for r, c in pixels:
        mask[r, c] = True
    return mask


def test_metadata_says_direction_category_and_reference():
    for metric in (PointingGame(), MassAccuracy(), RankAccuracy(), CuePointing()):
        assert metric.higher_is_better is True
        assert metric.category and metric.reference


def test_pointing_game_single_maximum_hit_and_miss():
    values = np.zeros((5, 5))
    values[1, 1] = 1.0
    assert PointingGame()(values, _mask((5, 5), (1, 1))) == 1.0
    assert PointingGame()(values, _mask((5, 5), (3, 3))) == 0.0
    assert PointingGame()(torch.from_numpy(values), np.array([1, 1, 2, 2])) == 1.0  # box x0, y0, x1, y1


def test_pointing_game_tolerance_is_euclidean_in_pixels():
    values = np.zeros((7, 7))
    values[0, 0] = 1.0
    truth = _mask((7, 7), (2, 2))  # distance sqrt(8) ≈ 2.83 from the maximum
    assert PointingGame(tolerance_px=2)(values, truth) == 0.0
    assert PointingGame(tolerance_px=2.9)(values, truth) == 1.0
    assert PointingGame(tolerance_px=2)(values, _mask((7, 7), (2, 0))) == 1.0  # distance 2, straight down


def test_pointing_game_ties_score_the_share_of_the_plateau_that_hits():
    values = np.zeros((4, 4))
    values[0:2, 0:2] = 0.7  # a plateau of 4 equal maxima
    assert PointingGame()(values, _mask((4, 4), (0, 0))) == pytest.approx(0.25)
    assert PointingGame()(values, _mask((4, 4), (0, 0), (1, 1), (3, 3))) == pytest.approx(0.5)
    assert PointingGame()(np.full((4, 4), 0.3), _mask((4, 4), (0, 0), (2, 2))) == pytest.approx(2 / 16)


def test_mass_accuracy_by_hand():
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert MassAccuracy()(values, _mask((2, 2), (0, 0), (0, 1))) == pytest.approx(3 / 10)
    assert MassAccuracy()(values, np.array([0, 1, 2, 2])) == pytest.approx(7 / 10)  # box over the bottom row
    negative = np.array([[-5.0, 1.0], [1.0, 2.0]])  # negative relevance is set to zero first
    assert MassAccuracy()(negative, _mask((2, 2), (0, 0))) == 0.0
    assert MassAccuracy()(negative, _mask((2, 2), (1, 1))) == pytest.approx(2 / 4)
    assert MassAccuracy()(np.zeros((2, 2)), _mask((2, 2), (1, 1))) == pytest.approx(1 / 4)  # scored as constant


def test_rank_accuracy_by_hand_and_with_ties():
    values = np.array([[4.0, 3.0], [2.0, 1.0]])
    assert RankAccuracy()(values, _mask((2, 2), (0, 0), (1, 1))) == pytest.approx(1 / 2)
    assert RankAccuracy()(values, _mask((2, 2), (0, 0), (0, 1))) == 1.0
    assert RankAccuracy()(values, _mask((2, 2), (1, 1))) == 0.0
    tied = np.array([[1.0, 1.0], [1.0, 0.0]])  # K = 2 places for 3 tied pixels, 1 of them on the object
    assert RankAccuracy()(tied, _mask((2, 2), (0, 0), (1, 1))) == pytest.approx((2 * 1 / 3) / 2)
    assert RankAccuracy()(np.ones((3, 3)), _mask((3, 3), (0, 0), (1, 1), (2, 2))) == pytest.approx(3 / 9)


def test_higher_is_better_in_the_direction_the_names_say():
    truth = _mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1))
    good, bad = np.zeros((4, 4)), np.zeros((4, 4))
    good[:2, :2], bad[2:, 2:] = 1.0, 1.0
    for metric in (PointingGame(), MassAccuracy(), RankAccuracy(), CuePointing()):
        assert metric(good, truth) > metric(bad, truth)


def test_cue_pointing_is_the_pointing_game_on_the_cue():
    values = np.zeros((8, 8))
    values[4, 4] = 1.0
    cue = _mask((8, 8), (4, 6))
    assert CuePointing(tolerance_px=1)(values, cue) == 0.0
    assert CuePointing(tolerance_px=2)(values, cue) == 1.0


@pytest.mark.parametrize("metric", [PointingGame(), MassAccuracy(), RankAccuracy()])
@pytest.mark.parametrize("values, truth, match", [
    (np.zeros((4, 4)), np.zeros((4, 5), bool), r"truth mask is 4x5 \(H x W\) but the map is 4x4"),
    (np.zeros((4, 4)), np.zeros((4, 4), bool), "truth region is empty"),
    (np.zeros((4, 4)), np.array([10, 10, 12, 12]), "truth region is empty"),
    (np.zeros((4, 4)), np.array([2, 2, 1, 3]), "x1 > x0"),
    (np.zeros((4,)), np.ones((4, 4), bool), r"shaped \(H, W\); received shape \(4,\)"),
    (np.full((2, 2), np.nan), np.ones((2, 2), bool), "NaN or infinite"),
    (np.zeros((4, 4)), np.zeros((2, 2, 2), bool), "mask \\(H, W\\), a box \\(4,\\) or boxes"),
])
def test_bad_inputs_say_what_was_expected(metric, values, truth, match):
    with pytest.raises(ValueError, match=match):
        metric(values, truth)


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance of 0 pixels or more"):
        PointingGame(tolerance_px=-1)
