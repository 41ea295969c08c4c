"""The runner: incremental JSONL, resume without recomputing, unreadable images reported and skipped."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from owlens.bias import BiasProbe
from owlens.bias.runner import RECORDS, read_records, run_benchmark
from owlens.bias.spec import parse_spec
from owlens.evaluation.bias_validation import TOY_PROMPT


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for group, count in (("red", 3), ("blue", 2)):
        (tmp_path / group).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / group / f"{i}.png")
    (tmp_path / "red" / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def _spec(folders, **overrides):
    data = {"groups": [{"name": "red", "folder": "red", "c_minus": "red circle", "c_plus": "blue circle"},
                       {"name": "blue", "folder": "blue", "c_minus": "blue circle", "c_plus": "red circle"}],
            "traits": ["heavy"], "prompt_template": TOY_PROMPT, "batch_size": 2, "max_new_tokens": 2,
            "statistics": {"resamples": 100, "permutations": 100}, **overrides}
    return parse_spec(data, folders)


@pytest.fixture(scope="module")
def first_run(tiny_model, folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return out, run_benchmark(tiny_model, _spec(folders), out, progress=False).to_json()


def test_runs_every_image_reports_the_broken_one_and_summarises(first_run):
    out, result = first_run
    records = read_records(out / RECORDS)
    assert len(records) == 6 and sum(r["status"] == "error" for r in records) == 1
    assert result["errors"][0]["image"] == "broken.jpg" and "broken.jpg" in result["errors"][0]["error"]
    red = result["groups"]["red"]
    assert red["n_images"] == 3 and red["n_errors"] == 1 and result["groups"]["blue"]["n_images"] == 2
    figures = red["traits"]["heavy"]
    assert set(figures) == {"clean", "adversarial", "random", "orthogonal", "identity"}
    for condition in ("adversarial", "random", "orthogonal", "identity"):
        assert figures[condition]["expected"]["n"] == 3 and len(figures[condition]["expected"]["ci95"]) == 2
        assert "n_unparseable" in figures[condition]["parsed"]
    adversarial = [r["perturbations"]["adversarial"] for r in records if r["status"] == "ok"]
    assert all(abs(p["linf"] - 1.0) < 1e-5 for p in adversarial)  # the paper default, epsilon 1
    assert red["perturbations"]["random"]["l2_mean"] == pytest.approx(red["perturbations"]["adversarial"]["l2_mean"])
    mean = np.mean([r["scores"]["heavy"]["adversarial"]["expected"] - r["scores"]["heavy"]["clean"]["expected"]
                    for r in records if r["group"] == "red" and r["status"] == "ok"])
    assert figures["adversarial"]["expected"]["delta"] == pytest.approx(mean)


def test_each_control_is_also_read_as_the_bias_net_of_it_image_by_image(first_run):
    out, result = first_run
    records = [r for r in read_records(out / RECORDS) if r["group"] == "red" and r["status"] == "ok"]
    net = result["groups"]["red"]["net"]["heavy"]
    assert set(net) == {"random", "orthogonal", "identity"}  # no null concept named: no null swap
    for control, figures in net.items():
        pairs = [(r["scores"]["heavy"]["adversarial"], r["scores"]["heavy"][control]) for r in records]
        assert figures["expected"]["delta"] == pytest.approx(np.mean([a["expected"] - c["expected"]
                                                                       for a, c in pairs]))
        unparsed = sum(a["parsed"] is None or c["parsed"] is None for a, c in pairs)
        assert figures["parsed"]["n_missing"] == figures["parsed"]["n_unparseable"] == unparsed


def test_a_group_with_a_semantic_null_is_swapped_to_it_too(tiny_model, folders, tmp_path):
    spec = _spec(folders, groups=[{"name": "red", "folder": "red", "c_minus": "red circle", "c_plus": "blue circle",
                                   "c_null": "green circle"}])
    result = run_benchmark(tiny_model, spec, tmp_path / "out", progress=False).to_json()
    records = [r for r in read_records(tmp_path / "out" / RECORDS) if r["status"] == "ok"]
    assert all(r["perturbations"]["null"]["presence_before"] and "null" in r["scores"]["heavy"] for r in records)
    red = result["groups"]["red"]
    assert set(red["traits"]["heavy"]) == {"clean", "adversarial", "random", "orthogonal", "identity", "null"}
    assert set(red["net"]["heavy"]) == {"random", "orthogonal", "identity", "null"}
    assert red["net"]["heavy"]["null"]["expected"]["delta"] == pytest.approx(np.mean(
        [r["scores"]["heavy"]["adversarial"]["expected"] - r["scores"]["heavy"]["null"]["expected"] for r in records]))
    assert json.loads((tmp_path / "out" / "spec.json").read_text())["groups"][0]["c_null"]["name"] == "green circle"


def test_resume_skips_finished_batches_and_survives_a_torn_line(tiny_model, folders, first_run, tmp_path,
                                                                 monkeypatch):
    spec, out, first = _spec(folders), tmp_path / "out", first_run[1]
    shutil.copytree(first_run[0], out)
    lines = (out / RECORDS).read_text().splitlines()
    # Kill mid-write: the last batch of "blue" (both its images) is lost and a torn line is left behind.
    blue = [i for i, line in enumerate(lines) if json.loads(line)["group"] == "blue"]
    (out / RECORDS).write_text("\n".join(lines[: blue[0]]) + "\n" + lines[blue[0]][:20])
    calls = []
    original = BiasProbe.assess
    monkeypatch.setattr(BiasProbe, "assess",
                        lambda self, e, *a, **k: calls.append(len(e)) or original(self, e, *a, **k))
    second = run_benchmark(tiny_model, spec, out, progress=False)
    assert calls == [2]  # only the lost batch was recomputed
    assert second.to_json()["groups"] == first["groups"]


def test_another_spec_in_the_same_folder_is_refused(tiny_model, folders, first_run):
    with pytest.raises(ValueError, match="another spec.*traits"):
        run_benchmark(tiny_model, _spec(folders, traits=["round"]), first_run[0], progress=False)


def test_a_folder_whose_controls_were_measured_the_earlier_way_is_refused_and_kept(tiny_model, folders, first_run,
                                                                                   tmp_path):
    # Written before the identity swap was held: its spec.json has no "controls" (and, older still, no layer).
    from owlens.bias.runner import SPEC_COPY

    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    saved = json.loads((out / SPEC_COPY).read_text())
    assert saved["controls"] == 2
    del saved["controls"]
    (out / SPEC_COPY).write_text(json.dumps(saved))
    records = (out / RECORDS).read_bytes()
    with pytest.raises(ValueError, match="controls version 1.*identity.*new --out"):
        run_benchmark(tiny_model, _spec(folders), out, progress=False)
    assert (out / RECORDS).read_bytes() == records and json.loads((out / SPEC_COPY).read_text()) == saved
