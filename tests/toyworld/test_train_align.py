"""The toy W stage runs the shared trainer end to end (here on the tiny checkpoints, for a few steps)."""

import json

import numpy as np

from owlens.models.alignment import Alignment
from owlens.toyworld.train_align import HIDDEN, ToyScenes, train


def test_toy_scenes_are_fixed_per_index():
    scenes = ToyScenes(5, seed=1)
    assert len(scenes) == 5 and np.array_equal(scenes[3], ToyScenes(5, seed=1)[3])
    assert not np.array_equal(scenes[3], scenes[4]) and scenes[0].shape == (64, 64, 3)


def test_stage_writes_a_paper_shaped_w_and_its_quality(tiny_checkpoints, tmp_path):
    folder = train(tmp_path, owl_dir=tiny_checkpoints["owl"], llava_dir=tiny_checkpoints["mllm"], scenes=128,
                   log=lambda *_: None)
    w = Alignment.from_pretrained(folder)
    assert w.config.hidden_dims == HIDDEN and w.config.activation == "relu"
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert quality["n_images"] == 512 and 0 < quality["relative_mse"] and -1 <= quality["token_cosine"] <= 1
