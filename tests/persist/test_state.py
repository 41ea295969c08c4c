"""Training state without pickle: round trips exactly, and a crafted file never runs code."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from owlens.persist import StateFormatError, load_state, save_state
from owlens.toyworld.checkpointing import CHECKPOINT_NAME, LegacyCheckpointError, StageState, run_stage

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "owlens"


class _Payload:
    """Unpickling this writes a file: proof that code from a checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _optimised():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_keeps_types_and_values(tmp_path):
    model, optimizer = _optimised()
    rng = np.random.default_rng(7)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
             "torch_rng": torch.get_rng_state(), "step": 12, "nested": (1.5, None, [True, "x"]), "__odd": {3: 4}}
    back = load_state(save_state(tmp_path / "s.safetensors", state))
    assert back["step"] == 12 and back["nested"] == (1.5, None, [True, "x"]) and back["__odd"] == {3: 4}
    assert back["rng"] == rng.bit_generator.state  # a 128-bit integer survives
    assert list(back["optimizer"]["state"]) == [0, 1]  # int keys stay ints, as load_state_dict needs
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    for key, value in model.state_dict().items():
        assert torch.equal(back["model"][key], value)
    assert torch.equal(back["torch_rng"], torch.get_rng_state())
    fresh, fresh_optimizer = _optimised()
    fresh_optimizer.load_state_dict(back["optimizer"])
    moments = fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(*moments)


def test_unsupported_values_are_refused_with_their_place(tmp_path):
    with pytest.raises(StateFormatError, match=r"state\.a\[1\].*object"):
        save_state(tmp_path / "s.safetensors", {"a": [1, object()]})
    assert not list(tmp_path.iterdir()), "nothing half-written"


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "])
def test_damaged_or_foreign_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "s.safetensors"
    path.write_bytes(content)
    with pytest.raises(StateFormatError, match="state file"):
        load_state(path)


def test_a_pickle_checkpoint_in_a_stage_folder_is_refused_unopened(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps(_Payload(marker)))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = StageState({"model": model}, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    with pytest.raises(LegacyCheckpointError, match="not loaded because unpickling"):
        run_stage(tmp_path, state, lambda step: (model(torch.ones(1, 2)).sum(), {}), steps=2, log=lambda m: None)
    assert not marker.exists()
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_the_owl_trainer_refuses_a_pickle_checkpoint(tmp_path):
    from owlens.toyworld.train_owl import train

    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(LegacyCheckpointError):
        train(tmp_path, steps=2, batch_size=1, log=lambda m: None)
    assert not marker.exists()


def test_a_stage_resumes_from_its_safetensors_checkpoint(tmp_path):
    def build():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, StageState({"model": model}, optimizer,
                                 torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s)))

    def loss(model):
        return lambda step: (((model(torch.randn(8, 2)) - 1) ** 2).mean(), {})

    straight, state = build()
    run_stage(tmp_path / "a", state, loss(straight), steps=6, log=lambda m: None)
    halted, state = build()
    run_stage(tmp_path / "b", state, loss(halted), steps=6, until=3, log=lambda m: None)
    resumed, state = build()
    assert run_stage(tmp_path / "b", state, loss(resumed), steps=6, log=lambda m: None) and state.step == 6
    assert torch.equal(resumed.weight, straight.weight)


def test_the_package_never_unpickles():
    forbidden = ("weights_only=False", "pickle.load", "allow_pickle=True", "import pickle", "torch.load(")
    hits = [f"{path.relative_to(PACKAGE)}: {needle}" for path in PACKAGE.rglob("*.py")
            for needle in forbidden if needle in path.read_text()]
    assert not hits, hits
