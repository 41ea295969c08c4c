"""Loading J from folders laid out like real checkpoints; clear errors when weights are absent."""

import pytest
import torch

from owlens.models.joint import JointModel
from owlens.models.loading import CheckpointNotFoundError
from owlens.toyworld.tiny import tiny_joint


def test_saved_model_loads_back_bit_exact(tiny_checkpoints):
    loaded = JointModel.from_pretrained(**tiny_checkpoints, dtype="fp32", device="cpu")
    original = tiny_joint(0)
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    pixels = torch.randn(1, 3, 64, 64)
    prompt = loaded.processor.prompts([loaded.processor.chat("is there a star ?")])
    with torch.no_grad():
        expected = original.logits(original.encode(pixels), prompt)
        assert torch.equal(expected, loaded.logits(loaded.encode(pixels), prompt))
    assert not loaded.training


def test_dtype_is_honoured(tiny_checkpoints):
    model = JointModel.from_pretrained(**tiny_checkpoints, dtype="bf16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.owl.dtype == torch.bfloat16 and model.llava.dtype == torch.bfloat16


@pytest.mark.parametrize("role", ["owl", "mllm", "projector"])
def test_missing_folder_names_the_part(tiny_checkpoints, tmp_path, role):
    paths = dict(tiny_checkpoints, **{role: str(tmp_path / "absent" / role)})
    with pytest.raises(CheckpointNotFoundError, match=str(tmp_path / "absent")):
        JointModel.from_pretrained(**paths, device="cpu")


def test_offline_hub_id_says_how_to_provide_weights(tiny_checkpoints):
    with pytest.raises(CheckpointNotFoundError, match=r"detector \(owl\).*HF_HUB_OFFLINE"):
        JointModel.from_pretrained(owl="owlens-test/no-such-owl", mllm=tiny_checkpoints["mllm"],
                                   projector=tiny_checkpoints["projector"], offline=True, device="cpu")


def test_fresh_projector_for_training(tiny_checkpoints):
    model = JointModel.from_pretrained(owl=tiny_checkpoints["owl"], mllm=tiny_checkpoints["mllm"],
                                       init_projector="light", device="cpu")
    assert (model.alignment.config.in_dim, model.alignment.config.out_dim) == (32, 48)
    with pytest.raises(ValueError, match="no alignment W"):
        JointModel.from_pretrained(owl=tiny_checkpoints["owl"], mllm=tiny_checkpoints["mllm"], device="cpu")


def test_half_named_checkpoints_are_refused(tiny_checkpoints):
    with pytest.raises(ValueError, match="name both"):
        JointModel.from_pretrained(owl=tiny_checkpoints["owl"], projector=tiny_checkpoints["projector"])


@pytest.mark.parametrize(("value", "message"), [("cuda:9", "CUDA is not available"), ("tpu", "unknown device")])
def test_bad_devices(value, message):
    from owlens.models.device import resolve_device

    if value.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message):
        resolve_device(value)


def test_dtype_names():
    from owlens.models.device import resolve_dtype

    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="expected 'auto' or one of"):
        resolve_dtype("int3")


def test_from_pretrained_builds_the_class_it_is_called_on(tiny_checkpoints):
    class Traced(JointModel):
        pass

    model = Traced.from_pretrained(**tiny_checkpoints, dtype="fp32", device="cpu")
    assert type(model) is Traced
    assert model.sources["owl"] == tiny_checkpoints["owl"] and model.projector_folder is not None
