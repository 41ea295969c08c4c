import json

import pytest
import torch

from owlens.models.alignment import Alignment, AlignmentConfig
from owlens.models.joint import JointModel
from owlens.toyworld.tiny import tiny_llava, tiny_owl


def test_paper_and_light_shapes():
    paper = AlignmentConfig.paper(768, 4096)
    assert paper.hidden_dims == (8192, 8192, 8192) and paper.activation == "relu"
    light = Alignment(AlignmentConfig.light(32, 48))
    linears = [m for m in light.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 48), (48, 48)]
    assert isinstance(light.mlp[1], torch.nn.GELU)
    assert light(torch.randn(2, 16, 32)).shape == (2, 16, 48)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_save_load_round_trip_is_bit_exact(tmp_path, dtype):
    torch.manual_seed(0)
    module = Alignment(AlignmentConfig(16, 24, (40, 8), "relu")).to(dtype)
    module.save_pretrained(tmp_path / "w")
    loaded = Alignment.from_pretrained(tmp_path / "w")
    assert loaded.config == module.config
    for (name, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randn(1, 5, 16, dtype=dtype)
    assert torch.equal(module(x), loaded(x))
    assert not list(tmp_path.glob("w/*.partial"))


def test_missing_folder_and_wrong_weights_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="alignment_config.json, model.safetensors"):
        Alignment.from_pretrained(tmp_path / "nowhere")
    Alignment(AlignmentConfig(16, 24, (8,), "gelu")).save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "alignment_config.json").write_text(json.dumps(
        {"in_dim": 16, "out_dim": 24, "hidden_dims": [9], "activation": "gelu"}))
    with pytest.raises(ValueError, match="does not match"):
        Alignment.from_pretrained(tmp_path / "w")


def test_unknown_activation():
    with pytest.raises(ValueError, match="expected one of"):
        AlignmentConfig(2, 2, (2,), "swish")


def test_projector_that_does_not_fit_the_models_is_refused():
    with pytest.raises(ValueError, match=r"maps 32→40 .* need 32 .*→48"):
        JointModel(tiny_owl(), tiny_llava(), Alignment(AlignmentConfig.light(32, 40)))
