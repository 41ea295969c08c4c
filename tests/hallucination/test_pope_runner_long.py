"""The real 3,000-question POPE file on a tiny J: killed with SIGKILL mid-run, resumed to every row exactly once,
with memory that does not grow with the number of questions answered."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from owlens.hallucination import runner
from owlens.hallucination.pope_format import read_questions
from owlens.hallucination.runner import PopeRunConfig, run_pope
from owlens.toyworld.tiny import tiny_joint, tiny_processor


@pytest.fixture(scope="module")
def coco_like(pope_files, tmp_path_factory):
    """Small random images under the 500 COCO names the adversarial split asks about."""
    folder = tmp_path_factory.mktemp("val2014")
    rng = np.random.default_rng(0)
    for name in {q.image for q in read_questions(pope_files["adversarial"])}:
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _command(paths, questions, images, out):
    return [sys.executable, "-m", "owlens", "pope", "run", str(questions), "--images", str(images), "--out", str(out),
            "--owl", paths["owl"], "--mllm", paths["mllm"], "--projector", paths["projector"], "--device", "cpu",
            "--batch-size", "48", "--max-new-tokens", "2", "--no-progress"]


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_killed_run_resumes_without_losing_or_repeating_a_row(tiny_checkpoints, pope_files, coco_like, tmp_path):
    out, questions = tmp_path / "answers.jsonl", pope_files["adversarial"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(_command(tiny_checkpoints, questions, coco_like, out), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _lines(out) < 400 and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    written = _lines(out)
    assert 0 < written < 3000, "the kill came before the first row or after the last"
    done = subprocess.run(_command(tiny_checkpoints, questions, coco_like, out), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{written} already in" in done.stdout  # every complete row kept, the torn one (if any) redone
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [q.question_id for q in read_questions(questions)]


def test_memory_stays_flat_over_three_thousand_questions(pope_files, coco_like, tmp_path, monkeypatch):
    model = tiny_joint(0, processor=tiny_processor())
    process, samples, append = psutil.Process(), [], runner.Journal.append

    def sampled(self, row):
        append(self, row)
        samples.append(process.memory_info().rss)

    monkeypatch.setattr(runner.Journal, "append", sampled)
    run_pope(model, pope_files["adversarial"], coco_like, tmp_path / "a.jsonl", PopeRunConfig(batch_size=48,
             max_new_tokens=2), progress=False)
    assert len(samples) == 3000
    growth = (max(samples[500:]) - samples[500]) / 2**20
    assert growth < 64, f"memory grew by {growth:.0f} MiB between question 500 and 3000"
