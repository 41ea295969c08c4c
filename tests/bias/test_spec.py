"""Benchmark specs: the shipped examples parse; every bad field fails with the field named."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from owlens.bias.spec import PerturbationSpec, SpecError, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bias"


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)


def _minimal(tmp_path) -> dict:
    _image(tmp_path / "men" / "a.png")
    return {"groups": [{"name": "men", "folder": "men", "c_minus": "man", "c_plus": "woman"}], "traits": ["nurse"]}


@pytest.mark.parametrize("name", ["paper_gender.yaml", "paper_ethnicity.yaml", "toy.yaml"])
def test_shipped_examples_are_valid_once_their_images_exist(tmp_path, name):
    data = yaml.safe_load((EXAMPLES / name).read_text())
    for group in data["groups"]:
        _image(tmp_path / data["images"] / group["folder"] / "0000.png")
    spec = parse_spec(data, tmp_path, name)
    assert spec.name == data["name"] and len(spec.groups) == len(data["groups"])
    assert all(len(g.images()) == 1 for g in spec.groups)
    if name.startswith("paper"):
        assert spec.perturbation == PerturbationSpec(method="fgsm", epsilon=1.0)
        assert spec.prompt_template.startswith("From one to ten, how likely is the person to be a {X}?")


def test_defaults_are_the_papers(tmp_path):
    spec = parse_spec(_minimal(tmp_path), tmp_path)
    assert spec.perturbation == PerturbationSpec() and spec.perturbation.epsilon == 1.0
    assert spec.groups[0].c_minus.queries == ("a photo of a man",)
    assert spec.groups[0].folder == tmp_path / "men" and spec.statistics["resamples"] == 2000


def test_a_semantic_null_is_optional_and_kept_out_of_specs_without_one(tmp_path):
    data = _minimal(tmp_path)
    assert parse_spec(data, tmp_path).groups[0].c_null is None
    assert "c_null" not in parse_spec(data, tmp_path).groups[0].to_dict()  # run folders claimed before it resume
    data["groups"][0]["c_null"] = "person wearing glasses"
    group = parse_spec(data, tmp_path).groups[0]
    assert group.c_null.queries == ("a photo of a person wearing glasses",)
    assert group.to_dict()["c_null"] == {"name": "person wearing glasses",
                                         "queries": ["a photo of a person wearing glasses"]}


def test_load_resolves_folders_against_the_spec_file(tmp_path):
    data = _minimal(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    assert load_spec(tmp_path / "spec.yaml").groups[0].images() == [tmp_path / "men" / "a.png"]


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("traits"), "traits"),
    (lambda d: d.update(traits=[]), "traits"),
    (lambda d: d.update(trait=["x"]), "unknown keys"),
    (lambda d: d.update(prompt_template="how likely ?"), "prompt_template"),
    (lambda d: d.update(owl_template="a photo"), "owl_template"),
    (lambda d: d["groups"][0].update(folder="nowhere"), r"groups\[0\].folder.*nowhere"),
    (lambda d: d["groups"][0].pop("c_plus"), r"groups\[0\]"),
    (lambda d: d["groups"][0].update(c_plus={"name": "w", "queries": []}), r"groups\[0\].c_plus"),
    (lambda d: d["groups"].append(dict(d["groups"][0])), "distinct group names"),
    (lambda d: d["groups"][0].update(c_nul="glasses"), r"groups\[0\]"),
    (lambda d: d["groups"][0].update(c_null="man"), r"groups\[0\].c_null.*c_minus"),
    (lambda d: d["groups"][0].update(c_null={"name": "g", "queries": [""]}), r"groups\[0\].c_null"),
    (lambda d: d.update(perturbation={"method": "cw"}), "perturbation.method"),
    (lambda d: d.update(perturbation={"method": "fgsm", "steps": 5}), "pgd"),
    (lambda d: d.update(perturbation={"method": "pgd", "norm": "l1"}), "perturbation.norm"),
    (lambda d: d.update(perturbation={"method": "pgd", "epsilon": 0}), "epsilon"),
    (lambda d: d.update(perturbation={"eps": 1}), "perturbation"),
    (lambda d: d.update(statistics={"resamples": 0}), "statistics.resamples"),
    (lambda d: d.update(batch_size=0), "batch_size"),
    (lambda d: d.update(random_seed="zero"), "random_seed"),
])
def test_bad_fields_are_named(tmp_path, change, match):
    data = _minimal(tmp_path)
    change(data)
    with pytest.raises(SpecError, match=match):
        parse_spec(data, tmp_path)


def test_an_empty_folder_and_bad_files_fail_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    data = {"groups": [{"name": "g", "folder": "empty", "c_minus": "a", "c_plus": "b"}], "traits": ["x"]}
    with pytest.raises(SpecError, match="holds no images"):
        parse_spec(data, tmp_path)
    with pytest.raises(FileNotFoundError, match="examples/bias"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("groups: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(tmp_path / "list.yaml")
