"""Worker processes share an evaluation's cases: the same rows, in the same order, as one process."""

import json

import numpy as np
import pytest

from owlens.evaluation import _workers
from owlens.evaluation.saliency_benchmark import RECORDS, run_saliency_benchmark
from owlens.models.joint import JointModel
from owlens.toyworld.tiny import tiny_joint, tiny_processor

METHODS = ["ga", "object_attribution", "detection_only", "random"]


def _numbers(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _rows(folder):
    return [json.loads(line) for line in (folder / RECORDS).read_text().splitlines()[1:]]


def test_two_workers_journal_the_rows_one_process_does(tmp_path):
    model = JointModel.from_pretrained(device="cpu", dtype="fp32")
    for workers in (1, 2):
        run_saliency_benchmark(model, n_scenes=2, seed=5, methods=METHODS, out_dir=tmp_path / str(workers), steps=4,
                               workers=workers, progress=False)
    alone, shared = _rows(tmp_path / "1"), _rows(tmp_path / "2")
    keys = [(r["kind"], r["cue"], r["index"]) for r in alone]
    assert [(r["kind"], r["cue"], r["index"]) for r in shared] == keys  # case order kept
    assert len(keys) == 6
    for a, b in zip(alone, shared):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(_numbers(b), _numbers(a), atol=1e-4, rtol=1e-5)


def test_workers_need_a_model_they_can_load_again():
    model = tiny_joint(0, processor=tiny_processor())
    assert model.reload_arguments() is None
    with pytest.raises(ValueError, match="2 workers need a model loaded with JointModel.from_pretrained"):
        run_saliency_benchmark(model, n_scenes=1, seed=0, methods=["random"], steps=2, workers=2, progress=False)
    # The default picks one process for such a model instead of failing.
    report = run_saliency_benchmark(model, n_scenes=1, seed=0, methods=["random"], steps=2, workers=None,
                                    progress=False)
    assert report.to_dict()["scenes"] == 1


def test_automatic_workers_follow_the_cores_and_the_work(monkeypatch):
    monkeypatch.setattr(_workers, "available_cores", lambda: 4)
    assert _workers.auto_workers(0) == 1
    assert _workers.auto_workers(_workers.CASES_PER_WORKER * 2 - 1) == 1
    assert _workers.auto_workers(_workers.CASES_PER_WORKER * 3) == 3
    assert _workers.auto_workers(10_000) == 4
    with pytest.raises(ValueError, match="at least 1 worker"):
        with _workers.case_rows(lambda: None, [()], 0):
            pass
