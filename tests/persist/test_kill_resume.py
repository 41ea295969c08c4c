"""SIGKILL at seeded random moments, then resume: the bias run and the saliency evaluation end with what an
uninterrupted run gives (every row once, in order, the same summary). The trainer and POPE have their own
kill tests (tests/align/test_trainer.py, tests/hallucination/test_pope_runner_long.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from owlens.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bias"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_when(command: list[str], journal: Path, rows: int, timeout: float = 120) -> bool:
    """Start the command, SIGKILL it once ``journal`` holds ``rows`` lines; False if it finished first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while _lines(journal) < rows and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return not finished


def _owlens(*args: str) -> list[str]:
    return [sys.executable, "-m", "owlens", *args]


def _moments(count: int, low: int, high: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).integers(low, high, count).tolist())


def test_a_killed_saliency_evaluation_resumes_to_the_uninterrupted_result(tiny_model_args, tmp_path):
    settings = ["evaluate", "saliency", "--scenes", "4", "--steps", "2", "--methods", "ga,gradient,random",
                "--json", "--no-progress", "--workers", "1", *tiny_model_args]

    def report(folder: Path) -> dict:
        printed = subprocess.run(_owlens(*settings, "--out", str(folder)), env=ENV, capture_output=True, text=True,
                                 check=True).stdout
        payload = json.loads(printed)
        payload.pop("seconds", None)
        return payload

    reference = report(tmp_path / "whole")
    whole = (tmp_path / "whole" / "saliency-cases.jsonl").read_text().splitlines()
    killed_mid_run = 0
    # 12 cases (4 objects, 4 candidates per prior) after the configuration line.
    for moment in _moments(2, 2, 12, seed=11):
        folder = tmp_path / f"killed-{moment}"
        killed_mid_run += _kill_when(_owlens(*settings, "--out", str(folder)), folder / "saliency-cases.jsonl",
                                     moment)
        assert report(folder) == reference
        rows = (folder / "saliency-cases.jsonl").read_text().splitlines()
        keys = [(json.loads(r).get("kind"), json.loads(r).get("cue"), json.loads(r).get("index")) for r in rows]
        assert keys == [(json.loads(r).get("kind"), json.loads(r).get("cue"), json.loads(r).get("index"))
                        for r in whole]  # every case once, in order
    assert killed_mid_run, "no kill landed while the evaluation was running"


@pytest.fixture
def bias_folder(tiny_model_args, tmp_path):
    """The toy spec over 12 exported toy scenes."""
    root = tmp_path / "bias"
    assert main(["evaluate", "bias", "--n-scenes", "12", "--json", "--export-images",
                 str(root / "toy-images" / "red"), *tiny_model_args]) == 0
    # Batches of 2 images: the records grow in six steps, so a kill can land between them.
    spec = (EXAMPLES / "toy.yaml").read_text().replace("batch_size: 50", "batch_size: 2")
    assert "batch_size: 2" in spec
    (root / "toy.yaml").write_text(spec)
    return root


def test_a_killed_bias_run_resumes_to_the_uninterrupted_result(tiny_model_args, bias_folder, tmp_path, capsys):
    capsys.readouterr()

    def command(out: Path) -> list[str]:
        return _owlens("bias", str(bias_folder / "toy.yaml"), "--out", str(out), "--no-progress", *tiny_model_args)

    whole = tmp_path / "whole"
    subprocess.run(command(whole), env=ENV, capture_output=True, check=True)
    reference = json.loads((whole / "summary.json").read_text())
    killed_mid_run = 0
    for moment in _moments(2, 1, 11, seed=5):
        out = tmp_path / f"killed-{moment}"
        killed_mid_run += _kill_when(command(out), out / "records.jsonl", moment)
        subprocess.run(command(out), env=ENV, capture_output=True, check=True)
        assert json.loads((out / "summary.json").read_text()) == reference
        images = [json.loads(line)["image"] for line in (out / "records.jsonl").read_text().splitlines()]
        expected = [json.loads(line)["image"] for line in (whole / "records.jsonl").read_text().splitlines()]
        assert [Path(i).name for i in images] == [Path(i).name for i in expected]  # once each, in listing order
        shutil.rmtree(out)
    assert killed_mid_run, "no kill landed while the bias run was running"
