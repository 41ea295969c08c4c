"""Toy POPE files: POPE's format and balance, labels true to the scenes, the injected partner among the
adversarial negatives, and a calibration split on other images."""

import json

import numpy as np
import pytest

from owlens.evaluation.toy_pope import SPLITS, build_toy_pope, training_statistics
from owlens.hallucination.pope_format import object_of, read_questions
from owlens.toyworld.defects import COOCCUR_CUE, COOCCUR_PARTNER
from owlens.toyworld.world import SHAPES


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_pope(tmp_path_factory.mktemp("toy"), seed=3, n_images=60, calibration_images=10,
                          statistics_scenes=600)


def _truth(toy):
    rows = [json.loads(line) for line in toy.truth.read_text().splitlines()]
    return {row["image"]: {o["shape"] for o in row["objects"]} for row in rows}


def test_labels_are_true_and_splits_are_balanced(toy):
    truth = _truth(toy)
    for split in (*SPLITS, "calibration"):
        questions = list(read_questions(toy.questions[split]))
        assert [q.question_id for q in questions] == list(range(1, len(questions) + 1))
        assert all((object_of(q.text) in truth[q.image]) == (q.label == "yes") for q in questions), split
        assert sum(q.label == "yes" for q in questions) * 2 == len(questions)
        assert all((toy.images / q.image).is_file() for q in questions)


def test_splits_share_images_and_positives_and_differ_in_negatives(toy):
    by_split = {split: list(read_questions(toy.questions[split])) for split in SPLITS}
    positives = {split: [(q.image, q.text) for q in qs if q.label == "yes"] for split, qs in by_split.items()}
    assert positives["random"] == positives["popular"] == positives["adversarial"]
    negatives = {split: [(q.image, q.text) for q in qs if q.label == "no"] for split, qs in by_split.items()}
    assert negatives["random"] != negatives["adversarial"]
    calibration = {q.image for q in read_questions(toy.questions["calibration"])}
    assert not calibration & {q.image for q in by_split["random"]}


def test_the_injected_partner_is_asked_of_every_scene_with_the_cue_and_without_it(toy):
    truth = _truth(toy)
    asked = {(q.image, object_of(q.text)) for q in read_questions(toy.questions["adversarial"]) if q.label == "no"}
    cue_scenes = [image for image, shapes in truth.items() if "_test_" in image and COOCCUR_CUE in shapes
                  and COOCCUR_PARTNER not in shapes]
    assert len(cue_scenes) >= 5
    assert all((image, COOCCUR_PARTNER) in asked for image in cue_scenes)


def test_training_statistics_carry_the_prior():
    frequency, cooccurrence = training_statistics(0, 800)
    cue, partner = SHAPES.index(COOCCUR_CUE), SHAPES.index(COOCCUR_PARTNER)
    assert cooccurrence[cue, partner] / frequency[cue] == pytest.approx(0.9, abs=0.06)
    assert np.argmax(frequency) == partner


def test_same_seed_same_files(tmp_path):
    a = build_toy_pope(tmp_path / "a", seed=5, n_images=4, calibration_images=2, statistics_scenes=100)
    b = build_toy_pope(tmp_path / "b", seed=5, n_images=4, calibration_images=2, statistics_scenes=100)
    for split in a.questions:
        assert a.questions[split].read_text() == b.questions[split].read_text()
    with pytest.raises(ValueError, match="at least one calibration image"):
        build_toy_pope(tmp_path / "c", n_images=4, calibration_images=0)
    with pytest.raises(ValueError, match="no negative image count"):
        build_toy_pope(tmp_path / "c", n_images=-1)


def test_calibration_only(tmp_path):
    # What `owlens calibrate` builds: the calibration split alone, the same questions as beside a test split.
    alone = build_toy_pope(tmp_path / "alone", seed=5, n_images=0, calibration_images=2, statistics_scenes=100)
    full = build_toy_pope(tmp_path / "full", seed=5, n_images=4, calibration_images=2, statistics_scenes=100)
    assert alone.questions["calibration"].read_text() == full.questions["calibration"].read_text()
    assert alone.questions["adversarial"].read_text() == ""


def test_a_rebuild_into_the_same_folder_leaves_its_images_untouched(tmp_path):
    # The POPE runner's fingerprint lists images with their mtimes: rewriting identical PNGs refused every resume.
    first = build_toy_pope(tmp_path, seed=5, n_images=3, calibration_images=2, statistics_scenes=100)
    images = sorted(first.images.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in images}
    damaged = images[0].read_bytes()
    images[0].write_bytes(b"not a png")
    build_toy_pope(tmp_path, seed=5, n_images=3, calibration_images=2, statistics_scenes=100)
    assert images[0].read_bytes() == damaged  # a file that differs is written again
    assert {p.name: p.stat().st_mtime_ns for p in images[1:]} == {n: stamps[n] for n in stamps if n != images[0].name}
