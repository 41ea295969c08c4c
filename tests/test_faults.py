"""Fault injection: POPE, bias and the saliency evaluation killed with SIGKILL at seeded moments, then resumed.

Each run is a real ``python -m owlens`` process, killed with SIGKILL (no handler, no clean-up) at moments drawn
from a seeded generator: once a drawn number of rows is in its journal, a drawn few milliseconds later (inside
a batch, inside a row's write), and once every row is written (inside the summary, the plot, run.json). The
next run resumes (the last one in this process, which saves an interpreter start); the folder a chain of kills
and resumes ends with must hold the rows of an uninterrupted run, in input order, each once, and the figures
computed from them, with no lock or partial file left. A float may differ in its last digits: a resumed POPE
run batches other questions together. A kill between two rows of one batch is too narrow a window to hit by
time, so that state is made by hand.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from owlens.cli import main
from owlens.rundir import read_run

SEED = 13
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the uninterrupted run in this process


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _in_process(argv: list[str]) -> None:
    """The uninterrupted run, in this process (no second interpreter start), on one thread like the killed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)


def _killed(argv: list[str], journal: Path, rows: int, delay: float) -> int:
    """Start ``owlens ARGV``, SIGKILL it once ``journal`` holds ``rows`` lines and ``delay`` seconds passed;
    returns the lines it left (the process may have ended first: that moment is then a plain resume)."""
    process = subprocess.Popen([sys.executable, "-m", "owlens", *argv], env=_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _lines(journal) < rows and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    return _lines(journal)


def _kill_and_resume(argv: list[str], journal: Path, total: int, header: int = 0) -> list[int]:
    """Kill at a seeded moment inside the rows, then once every row is written, then resume to the end;
    returns the lines each kill left. ``header``: lines of the journal that are not rows."""
    rng = random.Random(f"{SEED}/{journal.name}")
    moments = [(header + rng.randint(1, total - 1), rng.uniform(0, 0.02)), (header + total, rng.uniform(0, 0.3))]
    left = [_killed(argv, journal, rows, delay) for rows, delay in moments]
    _in_process(argv)  # the last resume: the state the kills left is on disk, whichever process reads it
    return left


def _same(resumed, straight, where: str = "") -> None:
    """Equal JSON, floats to float32 noise (a resumed batch holds other rows); texts, flags and ids exactly."""
    if isinstance(straight, dict):
        assert isinstance(resumed, dict) and sorted(resumed) == sorted(straight), where
        for key in straight:
            _same(resumed[key], straight[key], f"{where}.{key}")
    elif isinstance(straight, list):
        assert isinstance(resumed, list) and len(resumed) == len(straight), where
        for k, (a, b) in enumerate(zip(resumed, straight)):
            _same(a, b, f"{where}[{k}]")
    elif isinstance(straight, float) and not isinstance(resumed, bool):
        assert resumed == pytest.approx(straight, rel=1e-5, abs=1e-6), where
    else:
        assert resumed == straight, where


def _clean(folder: Path) -> None:
    """Nothing a killed run leaves: no partial file, no lock (the last run took and removed it)."""
    leftovers = [p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".lock"))]
    assert not leftovers


def _torn_copy(straight: Path, folder: Path, journal: str, keep: int, written: tuple[str, ...] = ()) -> Path:
    """``straight``'s folder as a kill between two rows' writes leaves it: ``keep`` lines of ``journal`` and half
    the next, none of the files written after the rows (``written``). A window too narrow to hit with a timed
    kill, made by hand."""
    import shutil

    shutil.copytree(straight, folder)
    lines = (straight / journal).read_bytes().splitlines(keepends=True)
    (folder / journal).write_bytes(b"".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    for name in written:
        (folder / name).unlink()
    return folder


def _rows(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# -- POPE --------------------------------------------------------------------------------------------------------

def test_pope_killed_at_seeded_moments_resumes_to_the_uninterrupted_rows(tiny_model_args, tmp_path):
    from owlens.hallucination.pope_format import read_questions

    assert main(["pope", "toy", str(tmp_path / "toy"), "--images", "5", "--calibration-images", "1"]) == 0
    questions = tmp_path / "toy" / "toy_pope_random.json"
    ids = [q.question_id for q in read_questions(questions)]

    def argv(out):
        return ["pope", "run", str(questions), "--images", str(tmp_path / "toy" / "images"), "--out", str(out),
                "--batch-size", "2", "--max-new-tokens", "2", "--threshold", "0.55", "--no-progress",
                *tiny_model_args]

    _in_process(argv(tmp_path / "straight" / "answers.jsonl"))
    out = tmp_path / "killed" / "answers.jsonl"
    left = _kill_and_resume(argv(out), out, len(ids))
    assert left[0] < len(ids), "the first kill came after the last row"
    rows, straight = _rows(out), _rows(tmp_path / "straight" / "answers.jsonl")
    assert [r["question_id"] for r in rows] == ids  # each question once, in the file's order
    _same(rows, straight)
    _same(read_run(out.with_name("answers.run"))["pope"], read_run(tmp_path / "straight" / "answers.run")["pope"])
    _clean(out.parent)


# -- bias --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bias_spec(tiny_model_args, tmp_path_factory):
    """Five exported toy scenes and a spec small enough for seconds: one trait, two PGD steps, 200 resamples."""
    root = tmp_path_factory.mktemp("bias")
    assert main(["evaluate", "bias", "--n-scenes", "5", "--json", "--export-images", str(root / "images" / "red"),
                 *tiny_model_args]) == 0
    spec = {"name": "faults", "images": "images",
            "groups": [{"name": "red", "folder": "red",
                        "c_minus": {"name": "red", "queries": ["a photo of a red circle", "a photo of a red square"]},
                        "c_plus": {"name": "blue", "queries": ["a photo of a blue circle",
                                                               "a photo of a blue square"]}}],
            "traits": ["heavy"], "prompt_template": "from one to ten , how {X} is the shape ?",
            "perturbation": {"method": "pgd", "epsilon": 22.0, "norm": "l2", "steps": 2, "region": 0.5},
            "random_seed": 0, "statistics": {"resamples": 200, "permutations": 200, "seed": 0},
            "max_new_tokens": 2, "batch_size": 2}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml"


def test_bias_killed_at_seeded_moments_resumes_to_the_uninterrupted_records(bias_spec, tiny_model_args, tmp_path,
                                                                            capsys):
    def argv(out):
        return ["bias", str(bias_spec), "--out", str(out), "--no-progress", *tiny_model_args]

    _in_process(argv(tmp_path / "straight"))
    out = tmp_path / "killed"
    left = _kill_and_resume(argv(out), out / "records.jsonl", 5)
    assert left[0] < 5, "the first kill came after the last record"
    records, straight = _rows(out / "records.jsonl"), _rows(tmp_path / "straight" / "records.jsonl")
    assert [r["image"] for r in records] == [f"{i:04d}.png" for i in range(5)]  # each image once, listing order
    _same(records, straight)
    _same(json.loads((out / "summary.json").read_text()),
          json.loads((tmp_path / "straight" / "summary.json").read_text()))
    assert (out / "bias.svg").read_text() == (tmp_path / "straight" / "bias.svg").read_text()
    _same(read_run(out)["bias"], read_run(tmp_path / "straight")["bias"])
    _clean(out)


def test_bias_killed_inside_a_batch_redoes_the_batch_without_repeating_its_first_record(bias_spec, tiny_model_args,
                                                                                         tmp_path, capsys):
    # Batches of 2: records 3 and 4 are one batch, whose records depend on each other (one forward pass).
    _in_process(["bias", str(bias_spec), "--out", str(tmp_path / "straight"), "--no-progress", *tiny_model_args])
    torn = _torn_copy(tmp_path / "straight", tmp_path / "torn", "records.jsonl", 3,
                      ("summary.json", "bias.svg", "run.json"))
    _in_process(["bias", str(bias_spec), "--out", str(torn), "--no-progress", *tiny_model_args])
    records = _rows(torn / "records.jsonl")
    assert [r["image"] for r in records] == [f"{i:04d}.png" for i in range(5)]
    _same(records, _rows(tmp_path / "straight" / "records.jsonl"))
    _same(json.loads((torn / "summary.json").read_text()),
          json.loads((tmp_path / "straight" / "summary.json").read_text()))


# -- saliency evaluation ---------------------------------------------------------------------------------------------

def _saliency_argv(out: Path, model_args: list[str]) -> list[str]:
    """A saliency evaluation of seconds: 2 scenes, 2 game steps, two methods."""
    return ["evaluate", "saliency", "--scenes", "2", "--steps", "2", "--methods", "ga,random", "--json",
            "--no-progress", "--out", str(out), *model_args]


def test_saliency_evaluation_killed_at_seeded_moments_resumes_to_the_uninterrupted_cases(tiny_model_args, tmp_path,
                                                                                         capsys):
    def argv(out):
        return _saliency_argv(out, tiny_model_args)

    _in_process(argv(tmp_path / "straight"))
    straight = _rows(tmp_path / "straight" / "saliency-cases.jsonl")
    out = tmp_path / "killed"
    cases = len(straight) - 1  # after the configuration line: 2 object cases, 2 candidates of each cue
    left = _kill_and_resume(argv(out), out / "saliency-cases.jsonl", cases, header=1)
    assert left[0] < cases + 1, "the first kill came after the last case"
    rows = _rows(out / "saliency-cases.jsonl")
    keys = [(r["kind"], r["cue"], r["index"]) for r in rows[1:]]
    assert len(set(keys)) == len(keys) == cases  # each case once
    _same(rows, straight)  # in the uninterrupted run's order
    _same(read_run(out)["tables"], read_run(tmp_path / "straight")["tables"])
    _clean(out)
    # A kill inside a case's line, the case before it whole: that one is redone, the others kept.
    torn = _torn_copy(tmp_path / "straight", tmp_path / "torn", "saliency-cases.jsonl", 3, ("run.json",))
    _in_process(argv(torn))
    _same(_rows(torn / "saliency-cases.jsonl"), straight)


# -- two runs on one --out ---------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _second_run_refused(argv: list[str], lock: Path, folder: Path, capsys) -> subprocess.Popen:
    """Start ``owlens ARGV``; once it holds ``lock`` (its pid written inside), stop it there with SIGSTOP, so
    that it is mid-run for as long as the second run takes, and start the same command again in this process:
    refused, exit 2, naming the first run's pid, writing nothing. Returns the first run, resumed (SIGCONT)."""
    first = subprocess.Popen([sys.executable, "-m", "owlens", *argv], env=_ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        try:
            if json.loads(lock.read_text()).get("pid") == first.pid:
                break
        except (OSError, ValueError):
            pass  # not created, or the holder not written yet
        time.sleep(0.002)
    assert first.poll() is None, f"the first run ended before it was caught holding its lock: {first.stderr.read()}"
    first.send_signal(signal.SIGSTOP)
    try:
        before = _snapshot(folder)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"is in use by another run (pid {first.pid}" in err and "Traceback" not in err
        assert _snapshot(folder) == before
    finally:
        first.send_signal(signal.SIGCONT)
    return first


def _finished(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


def test_a_second_bias_run_on_one_out_is_refused_and_the_first_ends_as_if_alone(bias_spec, tiny_model_args,
                                                                                 tmp_path, capsys):
    def argv(out):
        return ["bias", str(bias_spec), "--out", str(out), "--no-progress", *tiny_model_args]

    _in_process(argv(tmp_path / "straight"))
    out = tmp_path / "shared"
    _finished(_second_run_refused(argv(out), out / ".owlens.lock", tmp_path, capsys))
    _same(_rows(out / "records.jsonl"), _rows(tmp_path / "straight" / "records.jsonl"))
    _same(json.loads((out / "summary.json").read_text()),
          json.loads((tmp_path / "straight" / "summary.json").read_text()))
    _clean(out)


def test_a_second_saliency_evaluation_on_one_out_is_refused_and_the_first_ends_as_if_alone(tiny_model_args, tmp_path,
                                                                                           capsys):
    def argv(out):
        return _saliency_argv(out, tiny_model_args)

    _in_process(argv(tmp_path / "straight"))
    out = tmp_path / "shared"
    _finished(_second_run_refused(argv(out), out / ".owlens.lock", tmp_path, capsys))
    _same(_rows(out / "saliency-cases.jsonl"), _rows(tmp_path / "straight" / "saliency-cases.jsonl"))
    _same(read_run(out)["tables"], read_run(tmp_path / "straight")["tables"])
    _clean(out)


def test_a_second_pope_run_on_one_out_is_refused_and_the_first_ends_as_if_alone(tiny_model_args, tmp_path, capsys):
    from PIL import Image

    from owlens.hallucination.pope_format import PopeQuestion, write_questions

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{name}.png")
    write_questions(tmp_path / "q.json", [PopeQuestion(i, f"{'ab'[i % 2]}.png", f"Is there a {shape} in the image?",
                                                       "yes" if i % 3 else "no")
                                          for i, shape in enumerate(["circle", "star", "cross", "square"] * 3)])

    def argv(out):
        return ["pope", "run", str(tmp_path / "q.json"), "--images", str(images), "--out", str(out),
                "--max-new-tokens", "2", "--batch-size", "2", "--threshold", "0.5", "--no-progress",
                *tiny_model_args]

    _in_process(argv(tmp_path / "straight.jsonl"))
    out = tmp_path / "shared" / "answers.jsonl"
    _finished(_second_run_refused(argv(out), out.with_name("answers.jsonl.lock"), tmp_path / "shared", capsys))
    _same(_rows(out), _rows(tmp_path / "straight.jsonl"))
