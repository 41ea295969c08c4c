"""W's distillation: it learns, resumes exactly, survives bad images and a kill, and runs under accelerate."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from owlens.align import AlignConfig, list_images, train_alignment
from owlens.toyworld.tiny import tiny_joint, tiny_processor


def _images(count=24, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(count)]


def _train(out_dir, images, **settings):
    model = tiny_joint(0, processor=tiny_processor())
    config = AlignConfig(**{"batch_size": 4, "epochs": 2, "checkpoint_every": 3, "lr": 1e-3, **settings})
    return model, train_alignment(model, images, out_dir, config, progress=False, log=lambda *_: None)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_distillation_lowers_the_loss_and_freezes_only_for_the_run(tmp_path):
    model = tiny_joint(0, processor=tiny_processor())
    images = _images()
    pixels = torch.cat([model.processor.pixel_values(i) for i in images])
    targets = model.language.own_image_tokens(torch.cat([model.processor.mllm_pixel_values(i) for i in images]))

    def loss():
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model.image_tokens(model.encode(pixels)), targets))

    before = loss()
    result = train_alignment(model, images, tmp_path, AlignConfig(batch_size=4, epochs=3, lr=3e-3), progress=False)
    assert loss() < 0.7 * before
    assert result.steps == 18 and result.images_used == 72 and result.projector_dir == tmp_path / "projector"
    assert all(p.requires_grad for p in model.owl.parameters())  # borrowed state given back


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_is_exact(tmp_path, schedule):
    images = _images()
    straight, _ = _train(tmp_path / "straight", images, schedule=schedule)
    _, stopped = _train(tmp_path / "resumed", images, max_steps=7, schedule=schedule)
    assert stopped.projector_dir is None and stopped.steps == 7
    resumed, result = _train(tmp_path / "resumed", images, schedule=schedule)
    assert result.resumed_from_step == 7 and result.steps == 12
    assert _same_weights(straight.alignment, resumed.alignment)


def test_resume_with_other_settings_is_refused(tmp_path):
    _train(tmp_path, _images(), max_steps=3)
    with pytest.raises(ValueError, match="other settings"):
        _train(tmp_path, _images(), lr=5e-4)


def _image_folder(folder, count=10, corrupt=2):
    folder.mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(_images(count)):
        Image.fromarray(array).save(folder / f"{index:03d}.png")
    for index in range(corrupt):
        (folder / f"broken{index}.jpg").write_bytes(b"not a jpeg")
    return folder


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    paths = list_images(_image_folder(tmp_path / "images"))
    assert len(paths) == 12
    _, result = _train(tmp_path / "run", paths, epochs=1)
    assert result.images_skipped == 2 and result.images_used == 10 and result.projector_dir is not None


def test_image_sources(tmp_path):
    folder = _image_folder(tmp_path / "images", count=3, corrupt=0)
    listing = tmp_path / "list.txt"
    listing.write_text("# training images\nimages/000.png\n\nimages/002.png\n")
    assert [p.name for p in list_images(listing)] == ["000.png", "002.png"]
    assert len(list_images(folder)) == 3
    with pytest.raises(FileNotFoundError, match="folder of images"):
        list_images(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")


def _cli(paths, images, out, *extra):
    return [sys.executable, "-m", "owlens", "align", "train", "--owl", paths["owl"], "--mllm", paths["mllm"],
            "--images", str(images), "--out", str(out), "--shape", "light", "--batch-size", "4", "--epochs", "2",
            "--lr", "1e-3", "--device", "cpu", "--no-progress", *extra]


def test_a_killed_run_resumes_to_the_same_weights(tiny_checkpoints, tmp_path):
    images = _image_folder(tmp_path / "images", count=119, corrupt=1)
    subprocess.run(_cli(tiny_checkpoints, images, tmp_path / "straight"), check=True, capture_output=True)
    killed = subprocess.Popen(_cli(tiny_checkpoints, images, tmp_path / "killed", "--checkpoint-every", "1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoint").exists() and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = subprocess.run(_cli(tiny_checkpoints, images, tmp_path / "killed"), check=True, capture_output=True,
                          text=True)
    assert "resuming from step" in done.stdout + done.stderr
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["resumed_from_step"] < 60, "the kill came after the run had finished"
    assert result["images_skipped"] == 2 and result["steps"] == 60  # one bad image, seen in both epochs
    from owlens.models.alignment import Alignment

    a = Alignment.from_pretrained(tmp_path / "straight" / "projector")
    b = Alignment.from_pretrained(tmp_path / "killed" / "projector")
    assert _same_weights(a, b)


def test_two_processes_under_accelerate(tiny_checkpoints, tmp_path):
    images = _image_folder(tmp_path / "images", count=16, corrupt=0)
    # --multi_gpu is accelerate's multi-process launcher (gloo on a machine without GPUs); --cpu would start one.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "owlens",
               *_cli(tiny_checkpoints, images, tmp_path / "ddp")[3:]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    # global batch 4 split over 2 processes: 16 images x 2 epochs = 8 steps, every image used once per epoch
    assert result["processes"] == 2
    assert result["steps"] == 8 and result["images_used"] == 32


# The checkpoint swap's window: a child trains and is killed (os._exit, no clean-up) at one step of the swap
# during its second checkpoint; the rerun must resume from a complete checkpoint and end where an
# uninterrupted run ends.
_KILLED_IN_SWAP = """
import os, sys
import numpy as np
from owlens.align import AlignConfig, train_alignment, trainer
from owlens.toyworld.tiny import tiny_joint, tiny_processor

step, out = sys.argv[1], sys.argv[2]
seen = []

def hook(name):
    seen.append(name)
    if name == step and seen.count(step) == 2:
        os._exit(137)

trainer._swap_hook = hook
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(24)]
config = AlignConfig(batch_size=4, epochs=2, checkpoint_every=3, lr=1e-3)
train_alignment(tiny_joint(0, processor=tiny_processor()), images, out, config, progress=False, log=lambda *_: None)
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("whole"), _images())[0]


@pytest.mark.parametrize("step", ["written", "complete", "aside", "in-place"])
def test_a_kill_inside_the_checkpoint_swap_keeps_a_complete_checkpoint(tmp_path, uninterrupted, step):
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_SWAP, step, str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    model, result = _train(tmp_path, _images())
    # the checkpoint before the one being swapped in, or that one once it was complete: never step 0
    assert result.resumed_from_step > 0 and result.resumed_from_step % 3 == 0
    assert _same_weights(model.alignment, uninterrupted.alignment)
    assert sorted(p.name for p in tmp_path.glob("checkpoint*")) == ["checkpoint"]


def test_a_changed_image_folder_is_refused_on_resume(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for k, pixels in enumerate(_images(8)):
        Image.fromarray(pixels).save(folder / f"{k}.png")
    _train(tmp_path / "run", list_images(folder), max_steps=1)
    Image.fromarray(_images(1, seed=5)[0]).save(folder / "extra.png")
    with pytest.raises(ValueError, match=r"other inputs \(inputs\.images\..*extra\.png \(added\)\)"):
        _train(tmp_path / "run", list_images(folder), max_steps=2)


def test_an_accelerate_pickle_checkpoint_is_refused_unopened(tmp_path):
    import pickle

    images = _images(8)
    _train(tmp_path, images, max_steps=2)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "training.safetensors").unlink()
    (checkpoint / "optimizer.bin").write_bytes(pickle.dumps(Payload()))  # what accelerate's save_state wrote
    with pytest.raises(ValueError, match="accelerate's pickle format"):
        _train(tmp_path, images)
    assert not marker.exists()
