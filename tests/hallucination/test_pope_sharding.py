"""`owlens pope run` under `accelerate launch` with two CPU processes: each answers its shard, one file results."""

import json
import subprocess
import sys

from owlens.evaluation.toy_pope import build_toy_pope
from owlens.hallucination.pope_format import read_questions


def test_two_processes_write_one_merged_file(tiny_checkpoints, tmp_path):
    toy = build_toy_pope(tmp_path / "toy", n_images=5, calibration_images=1, statistics_scenes=200)
    out = tmp_path / "answers.jsonl"
    # `--multi_gpu` is accelerate's multi-process (torchrun) launcher; `--cpu` would start a single process.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "owlens", "pope",
               "run", str(toy.questions["adversarial"]), "--images", str(toy.images), "--out", str(out),
               "--owl", tiny_checkpoints["owl"], "--mllm", tiny_checkpoints["mllm"],
               "--projector", tiny_checkpoints["projector"], "--batch-size", "3", "--max-new-tokens", "2",
               "--device", "cpu", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shard 1/2" in done.stdout and "shard 2/2" in done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [q.question_id for q in read_questions(toy.questions["adversarial"])]
    assert not list(tmp_path.glob("answers.jsonl.part-*"))
