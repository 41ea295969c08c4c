import os

import numpy as np
import pytest
import torch

# Tests never reach a hub: a missing checkpoint must fail fast and clearly, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def _toy_weights_shipped() -> bool:
    """The one answer to "are the toy weights here?": every part's weights file (a checkout that has not run
    `owlens toyworld train --ship` has none)."""
    from owlens.models.loading import TOY_WEIGHTS

    return all((TOY_WEIGHTS / part / "model.safetensors").is_file() for part in ("owl", "llava", "align"))


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not config.getoption("--runslow"):
        skips["slow"] = pytest.mark.skip(reason="slow: run with --runslow")
    if not _toy_weights_shipped():
        skips["toy_weights"] = pytest.mark.skip(reason="the shipped toy-world weights are absent (owlens toyworld "
                                                       "train --ship builds them)")
    for item in items:
        for keyword, skip in skips.items():
            if keyword in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A tiny J written to disk the way real checkpoints are laid out: owl/, mllm/, projector/."""
    from owlens.toyworld.tiny import save_tiny_checkpoints

    return {k: str(v) for k, v in save_tiny_checkpoints(tmp_path_factory.mktemp("tiny")).items()}


@pytest.fixture(scope="session")
def tiny_model_args(tiny_checkpoints):
    """The CLI flags that point any command at the tiny checkpoints, on the CPU."""
    return ["--owl", tiny_checkpoints["owl"], "--mllm", tiny_checkpoints["mllm"],
            "--projector", tiny_checkpoints["projector"], "--device", "cpu"]


@pytest.fixture
def image(tmp_path):
    """A noise PNG, 48x64 (not square, so both processors' resizing is exercised); its path as a string."""
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(path)
