"""``owlens bias`` and ``owlens evaluate bias``: thin commands, JSON and a plot out, clear errors."""

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from owlens.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bias"


@pytest.fixture(scope="module")
def toy_run(tiny_model_args, tmp_path_factory):
    """`evaluate bias` on 4 scenes, exporting them, then `bias` on toy.yaml pointed at the exported PNGs."""
    root, printed = tmp_path_factory.mktemp("toy"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["evaluate", "bias", "--n-scenes", "4", "--json", "--export-images",
                     str(root / "toy-images" / "red"), *tiny_model_args])
    assert code == 0
    return root, json.loads(printed.getvalue())


def test_evaluate_bias_prints_the_issue_s_json(toy_run):
    root, payload = toy_run
    assert payload["injected_delta"] == 4.0 and 0.0 <= payload["owl_swap_success"] <= 1.0
    for name in ("biased", "control", "random_control"):
        assert set(payload[name]) >= {"delta", "ci"} and len(payload[name]["ci"]) == 2
    assert payload["settings"]["n_scenes"] == 4 and set(payload["ceiling"]) == {"biased", "control"}
    assert sorted(p.name for p in (root / "toy-images" / "red").iterdir()) == [f"{i:04d}.png" for i in range(4)]


def test_bias_on_the_toy_spec_matches_the_toy_validation(tiny_model_args, toy_run, tmp_path, capsys):
    root, expected = toy_run
    spec = root / "toy.yaml"
    spec.write_text((EXAMPLES / "toy.yaml").read_text())
    out = tmp_path / "run"
    assert main(["bias", str(spec), "--out", str(out), "--no-progress", *tiny_model_args]) == 0
    printed = capsys.readouterr().out
    assert "OWL swap rate" in printed and "heavy, the bias net of each control: random" in printed
    summary = json.loads((out / "summary.json").read_text())
    heavy = summary["groups"]["red"]["traits"]["heavy"]
    # Same scenes, same probe: only the image path differs (PNG + OWL's processor vs the toy's own pixels).
    assert heavy["adversarial"]["expected"]["delta"] == pytest.approx(expected["biased"]["delta"], abs=1e-4)
    assert heavy["random"]["expected"]["delta"] == pytest.approx(expected["random_control"]["delta"], abs=1e-4)
    # toy.yaml names the validation's semantic null (green): its swap and the bias net of every control match too
    assert heavy["null"]["expected"]["delta"] == pytest.approx(expected["null_control"]["delta"], abs=1e-4)
    net = summary["groups"]["red"]["net"]["heavy"]
    for control in ("random", "orthogonal", "identity", "null"):
        assert net[control]["expected"]["delta"] == pytest.approx(expected[f"net_of_{control}"]["delta"], abs=1e-4)
    tables = {t["title"]: t for t in json.loads((out / "run.json").read_text())["tables"]}
    rows = tables["the bias net of each control (expected score)"]["rows"]
    assert [r[:3] for r in rows if r[1] == "heavy"] == [["red", "heavy", c]
                                                         for c in ("random", "orthogonal", "identity", "null")]
    svg = ET.fromstring((out / "bias.svg").read_text())
    assert svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}circle")) >= 6
    assert len((out / "records.jsonl").read_text().splitlines()) == 4


def test_a_one_image_bias_run_prints_no_ci_and_says_why(tiny_model_args, toy_run, tmp_path, capsys):
    root, _ = toy_run
    (tmp_path / "one" / "red").mkdir(parents=True)
    (tmp_path / "one" / "red" / "0000.png").write_bytes((root / "toy-images" / "red" / "0000.png").read_bytes())
    spec = yaml.safe_load((EXAMPLES / "toy.yaml").read_text())
    spec.update(images=str(tmp_path / "one"), traits=["heavy"], perturbation={"method": "fgsm"}, max_new_tokens=2)
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["bias", str(tmp_path / "one.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 *tiny_model_args]) == 0
    printed = capsys.readouterr()
    heavy = next(line for line in printed.out.splitlines() if line.strip().startswith("heavy:"))
    assert heavy.count("[n/a, n/a]") == 5  # adversarial and the 4 controls (toy.yaml's null): a delta each, no CI
    warnings = [line for line in printed.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "95% CI needs at least 2 images" in warnings[0] and "received 1" in warnings[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["groups"]["red"]["traits"]["heavy"]["adversarial"]["expected"]["ci95"] == [None, None]
    assert main(["report", str(tmp_path / "run")]) == 0


def test_evaluate_bias_text_mode(tiny_model_args, capsys):
    assert main(["evaluate", "bias", "--n-scenes", "2", "--method", "pgd", "--epsilon", "0.5", "--steps", "2",
                 *tiny_model_args]) == 0
    out = capsys.readouterr().out
    assert "OWL swap success" in out and "random_control" in out and "ceiling biased" in out


def test_a_bad_spec_fails_before_any_model_is_loaded(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "g", "folder": "g", "c_minus": "a", "c_plus": "b"}], "traits": ["x"]}))
    assert main(["bias", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "o"), "--owl", "/no/such/owl",
                 "--mllm", "/no/such/mllm", "--projector", "/no/such/w"]) == 2
    err = capsys.readouterr().err
    assert "groups[0].folder" in err and "holds no images" in err
