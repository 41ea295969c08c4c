"""`check`: the objects an answer names, each grounded or not by the detector on the same embedding."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from owlens.cli import main
from owlens.hallucination.check import check
from owlens.hallucination.claims import claim_boxes
from owlens.hallucination.flag import PresenceThreshold
from owlens.models.language import Generation
from owlens.toyworld.text import toy_vocabulary
from owlens.toyworld.tiny import tiny_joint, tiny_processor


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_every_mentioned_object_gets_the_detectors_verdict(image, monkeypatch):
    model = tiny_joint(0, processor=tiny_processor())
    monkeypatch.setattr(model, "generate", lambda *a, **k: Generation(["a red circle and a star ."], [[1]]))
    with torch.no_grad():
        detections = model.detect(model.encode_images(image), ["a photo of a red circle", "a photo of a star"])
    # each name on a box of its own (claims.py, tested there): the weaker one moves if both best boxes overlap
    claims = claim_boxes(detections.logits[0], detections.boxes_xyxy_px((64, 64))[0])
    best = claims.logit  # (2,)
    threshold = PresenceThreshold(float(best.mean()), 0.5, float("nan"), 0)  # between the two objects' scores
    result = check(model, image, "what is in the image ?", toy_vocabulary(), threshold=threshold)
    assert [o.name for o in result.objects] == ["red circle", "star"]
    for verdict, z in zip(result.objects, best):
        assert verdict.presence_logit == pytest.approx(float(z), abs=1e-5)
        assert verdict.grounded == (float(z) > threshold.logit)
    assert sum(o.grounded for o in result.objects) == 1 and len(result.ungrounded) == 1
    names = ["red circle", "star"]
    assert [o.held_by for o in result.objects] == [names[h] if h >= 0 else None for h in claims.held_by.tolist()]
    assert [o.detection.index for o in result.objects] == claims.index.tolist()
    assert all(len(o.box_xyxy_px) == 4 for o in result.objects)


def test_cli_lists_and_draws(tiny_checkpoints, image, tmp_path, capsys):
    out = tmp_path / "check.png"
    args = ["check", str(image), "--prompt", "what is in the image ?", "--vocabulary", "toy", "--json",
            "--max-new-tokens", "6", "--out", str(out), "--owl", tiny_checkpoints["owl"], "--mllm",
            tiny_checkpoints["mllm"], "--projector", tiny_checkpoints["projector"], "--device", "cpu"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"answer", "objects", "ungrounded", "threshold"} and out.is_file()


@pytest.mark.parametrize("answer, expected", [("yes", ["red circle"]), ("Yes, there is a red circle and a star.",
                                                                        ["red circle", "star"]), ("no", [])])
def test_a_yes_to_a_presence_question_checks_the_object_asked_about(image, monkeypatch, answer, expected):
    model = tiny_joint(0, processor=tiny_processor())
    monkeypatch.setattr(model, "generate", lambda *a, **k: Generation([answer], [[1]]))
    result = check(model, image, "is there a red circle ?", toy_vocabulary())
    assert [o.name for o in result.objects] == expected
