"""The saliency benchmark's plumbing on the tiny J: cases, journal and resume, summary, CLI, WSOL folders."""

import json

import numpy as np
import pytest
from PIL import Image

from owlens.evaluation import saliency_benchmark
from owlens.evaluation.saliency_benchmark import run_saliency_benchmark, summarise
from owlens.evaluation.saliency_cases import cue_candidates, object_cases
from owlens.evaluation.wsol import read_wsol_folder
from owlens.toyworld.text import CAPTION_QUESTION, caption
from owlens.toyworld.tiny import tiny_joint, tiny_processor

KEYS = {"pointing_game", "mass_accuracy", "rank_accuracy", "maxboxacc", "deletion_auc", "insertion_auc",
        "cue_pointing"}


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, processor=tiny_processor())


def test_object_cases_name_a_unique_shape_and_stop_before_it():
    cases = object_cases(20, seed=3)
    assert [c.index for c in cases] == list(range(20))
    for case in cases:
        shapes = [o.shape for o in case.scene.objects]
        assert shapes.count(case.token) == 1 and case.query is None and case.kind == "object"
        obj = case.scene.objects[shapes.index(case.token)]
        assert np.array_equal(case.truth_mask, obj.mask) and case.truth_boxes.tolist() == [list(obj.box_xyxy)]
        forced = case.prompt.split("ASSISTANT:")[1].split()
        assert CAPTION_QUESTION in case.prompt and caption(case.scene).split()[len(forced)] == case.token
        assert forced[-1] in ("red", "green", "blue", "yellow", "purple")  # "... a large red" → shape next
    again = object_cases(20, seed=3)
    assert [(c.prompt, c.token) for c in again] == [(c.prompt, c.token) for c in cases]
    assert [c.prompt for c in object_cases(20, seed=4)] != [c.prompt for c in cases]


def test_cue_candidates_hold_the_cue_and_not_its_partner():
    for case in cue_candidates(15, seed=0):
        shapes = [o.shape for o in case.scene.objects]
        assert "cross" in shapes and "star" not in shapes
        assert (case.token, case.query) == ("yes", "a photo of a star")
        assert case.prompt.endswith("is there a star ? ASSISTANT:")
        crosses = [o for o in case.scene.objects if o.shape == "cross"]
        assert np.array_equal(case.truth_mask, np.any([o.mask for o in crosses], axis=0))
        assert len(case.truth_boxes) == len(crosses)


def test_run_writes_rows_resumes_and_refuses_another_configuration(model, tmp_path, monkeypatch):
    methods = ["ga", "detection_only", "random"]
    report = run_saliency_benchmark(model, n_scenes=3, seed=0, methods=methods, out_dir=tmp_path, steps=4,
                                    progress=False)
    payload = json.loads(json.dumps(report.to_dict()))
    assert set(payload["methods"]) == set(methods) and payload["scenes"] == 3
    assert KEYS <= set(payload["methods"]["ga"]) and payload["cue_candidates"] == 3
    rows = (tmp_path / "saliency-cases.jsonl").read_text().splitlines()
    assert json.loads(rows[0]) == {"config": {"scenes": 3, "seed": 0, "methods": methods, "steps": 4,
                                              "pixel_steps": 16, "priors": ["cross→star", "square→triangle"]}}
    assert payload["cue_cases"] + payload["cue_controls"] == 3  # every candidate: a cue case or a control
    for cue in ("cross→star", "square→triangle"):
        assert payload["cues"][cue]["cases"] + payload["cues"][cue]["controls"] == 3
    assert len(rows) == 1 + 3 + 3 + 3
    assert {json.loads(row)["kind"] for row in rows[1:]} <= {"object", "cue", "control"}
    for name in methods:
        value = payload["methods"][name]["deletion_auc"]
        assert value is not None and np.isfinite(value)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished case was computed again")

    monkeypatch.setattr(saliency_benchmark, "_explain_case", refuse)
    again = run_saliency_benchmark(model, n_scenes=3, seed=0, methods=methods, out_dir=tmp_path, steps=4,
                                   progress=False).to_dict()
    assert again["methods"] == payload["methods"]
    with pytest.raises(ValueError, match="holds a run with configuration"):
        run_saliency_benchmark(model, n_scenes=4, seed=0, methods=methods, out_dir=tmp_path, steps=4, progress=False)
    with pytest.raises(ValueError, match="unknown explanation methods \\['lime'\\]"):
        run_saliency_benchmark(model, n_scenes=1, methods=["lime"], progress=False)


def test_random_maps_do_not_depend_on_resuming(model, tmp_path):
    records = tmp_path / "saliency-cases.jsonl"
    run_saliency_benchmark(model, n_scenes=2, seed=1, methods=["random"], steps=2, out_dir=tmp_path, progress=False)
    whole = records.read_text().splitlines()
    records.write_text("\n".join(whole[:2]) + "\n")  # as if killed after the first case
    run_saliency_benchmark(model, n_scenes=2, seed=1, methods=["random"], steps=2, out_dir=tmp_path, progress=False)
    assert records.read_text().splitlines() == whole


def _row(kind, correct, **per_method):
    return {"kind": kind, "index": 0, "correct": correct, "methods": per_method}


def test_summary_by_hand():
    ga_hit = {"pointing_game": 1.0, "pointing_game_box": 1.0, "mass_accuracy": 0.5, "rank_accuracy": 0.25,
              "iou_largest": [0.6, 0.2], "iou_best": [0.8, 0.2], "deletion_auc": 1.0, "insertion_auc": 3.0}
    ga_miss = dict(ga_hit, pointing_game=0.0, iou_largest=[0.1, 0.1], iou_best=[0.35, 0.1], deletion_auc=2.0)
    rows = [_row("object", True, ga=ga_hit), _row("object", True, ga=ga_miss),
            _row("object", False, ga=dict(ga_hit, pointing_game=0.0, deletion_auc=6.0)),
            _row("cue", None, ga={"cue_pointing": 1.0, "deletion_auc": 0.0, "insertion_auc": 1.0}),
            _row("cue", None, ga={"cue_pointing": 0.0, "deletion_auc": 0.0, "insertion_auc": 1.0}),
            _row("control", None, ga={"cue_pointing": 0.25, "deletion_auc": 9.0, "insertion_auc": 9.0})]
    summary = summarise(rows, ["ga"]).methods["ga"]
    assert summary["pointing_game"] == 0.5  # over the correct tokens only
    assert summary["deletion_auc"] == pytest.approx(3.0)  # over every object token
    assert summary["maxboxacc"] == 0.5 and summary["maxboxacc_v2"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert summary["cue_pointing"] == 0.5 and summary["cue_pointing_control"] == 0.25
    assert summary["cue_deletion_auc"] == 0.0  # controls are kept apart from the cue cases
    empty = summarise([], ["ga"])
    assert empty.scenes == 0 and empty.methods["ga"]["pointing_game"] is None


def test_cli_prints_the_json_the_issue_names(tiny_model_args, capsys):
    from owlens.cli import main

    code = main(["evaluate", "saliency", "--scenes", "2", "--seed", "5", "--methods", "ga,random", "--steps", "2",
                 "--json", "--no-progress", *tiny_model_args])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["methods"]) == {"ga", "random"} and payload["scenes"] == 2 and "cue_cases" in payload
    assert KEYS <= set(payload["methods"]["ga"])


def _scene_folder(tmp_path, layout):
    from owlens.toyworld.world import sample_scene

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, n_objects=1, prior=False) for _ in range(3)]
    (tmp_path / "images").mkdir()
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(tmp_path / "images" / f"{i}.png")
    boxes = [scene.objects[0].box_xyxy for scene in scenes]
    if layout == "wsolevaluation":
        (tmp_path / "localization.txt").write_text(
            "".join(f"images/{i}.png,{x0},{y0},{x1},{y1}\n" for i, (x0, y0, x1, y1) in enumerate(boxes)))
    else:
        (tmp_path / "images.txt").write_text("".join(f"{i + 1} {i}.png\n" for i in range(3)))
        (tmp_path / "bounding_boxes.txt").write_text(
            "".join(f"{i + 1} {x0} {y0} {x1 - x0} {y1 - y0}\n" for i, (x0, y0, x1, y1) in enumerate(boxes)))
        (tmp_path / "train_test_split.txt").write_text("1 0\n2 1\n3 0\n")  # image 2 is a training image
    return boxes


@pytest.mark.parametrize("layout", ["wsolevaluation", "cub"])
def test_wsol_folders_are_read_in_both_layouts(tmp_path, layout):
    boxes = _scene_folder(tmp_path, layout)
    items = read_wsol_folder(tmp_path)
    keep = [0, 1, 2] if layout == "wsolevaluation" else [0, 2]
    assert [p.name for p, _ in items] == [f"{i}.png" for i in keep]
    for (_, got), i in zip(items, keep):
        np.testing.assert_allclose(got, [boxes[i]])


def test_wsol_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a WSOL folder"):
        read_wsol_folder(tmp_path)
    (tmp_path / "localization.txt").write_text("a.png,1,2,3\n")
    with pytest.raises(ValueError, match=r"localization.txt:1: expected 'path,x0,y0,x1,y1'"):
        read_wsol_folder(tmp_path)
    (tmp_path / "localization.txt").write_text("a.png,1,2,3,4\n")
    with pytest.raises(FileNotFoundError, match="1 images named"):
        read_wsol_folder(tmp_path)


def test_cli_wsol_mode(tiny_model_args, tmp_path, capsys):
    from owlens.cli import main

    _scene_folder(tmp_path, "wsolevaluation")
    code = main(["evaluate", "saliency", "--wsol", str(tmp_path), "--token", "circle", "--question",
                 "what is in the image ?", "--answer-prefix", "a large red", "--methods", "ga,detection_only",
                 "--resolution", "32", "--json", "--no-progress", *tiny_model_args])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["images"] == 3 and payload["token"] == "circle" and payload["prompt"].endswith("a large red")
    for name in ("ga", "detection_only"):
        assert set(payload["methods"][name]) == {"maxboxacc", "maxboxacc_v2", "pointing_game"}
        assert all(0.0 <= v <= 1.0 for v in payload["methods"][name].values())


def test_fast_path_equals_the_plain_path(model):
    methods = ["object_attribution", "detection_only", "random"]
    fast = run_saliency_benchmark(model, n_scenes=2, seed=2, methods=methods, steps=4, progress=False).to_dict()
    plain = run_saliency_benchmark(model, n_scenes=2, seed=2, methods=methods, steps=4, progress=False,
                                   fast=False).to_dict()
    for name in methods:
        for key, value in plain["methods"][name].items():
            if isinstance(value, float):
                assert fast["methods"][name][key] == pytest.approx(value, abs=1e-5), (name, key)
            else:
                assert fast["methods"][name][key] == value, (name, key)
    assert fast["cues"] == plain["cues"] and fast["causal"] == plain["causal"]
    assert fast["methods"]["random"]["deletion_auc_pixel"] is not None


def _causal_row(kind, cause, cue=None, correct=True, **per_method):
    return {"kind": kind, "index": 0, "cue": cue, "correct": correct, "methods": per_method,
            "causal": {"cause": cause, "cause_is_cue": cause == 0 and cue is not None, "cause_is_named": cause == 0,
                       "p_yes": 0.9, "p_yes_without_cues": 0.1}}


def test_causal_pointing_cue_blocks_and_pairs_by_hand():
    def scores(cp, pg=1.0, pixel=2.0):
        return {"causal_pointing": cp, "pointing_game": pg, "pointing_game_box": pg, "mass_accuracy": 0.5,
                "rank_accuracy": 0.5, "iou_largest": [0.6], "iou_best": [0.6], "deletion_auc": 1.0,
                "insertion_auc": 2.0, "deletion_auc_pixel": pixel, "insertion_auc_pixel": 3.0}

    rows = [_causal_row("object", 0, oa=scores(1.0), detection_only=scores(1.0, pixel=3.0)),
            _causal_row("object", 1, oa=scores(0.0), detection_only=scores(1.0, pg=0.0, pixel=2.0)),
            _causal_row("object", None, oa=scores(None), detection_only=scores(None)),
            _causal_row("cue", 0, "square→triangle", oa={"causal_pointing": 1.0, "cue_pointing": 1.0},
                        detection_only={"causal_pointing": 0.0, "cue_pointing": 0.0}),
            _causal_row("cue", 2, "square→triangle", oa={"causal_pointing": 1.0, "cue_pointing": 0.0},
                        detection_only={"causal_pointing": 0.0, "cue_pointing": 0.0})]
    report = summarise(rows, ["oa", "detection_only"]).to_dict()
    oa = report["methods"]["oa"]
    assert oa["causal_pointing"] == {"object": 0.5, "square→triangle": 1.0}
    assert report["methods"]["detection_only"]["causal_pointing"]["square→triangle"] == 0.0
    assert report["causal"]["object"] == {"cases": 3, "single_cause": 2, "no_single_cause": 1,
                                          "named_object_is_cause": 1}
    block = report["cues"]["square→triangle"]
    assert (block["cases"], block["verified_causal"], block["no_single_cause"]) == (2, 1, 0)
    assert block["methods"]["oa"]["cue_pointing"] == 0.5
    paired = report["paired"]["oa"]
    assert paired["pointing_game"][0] == pytest.approx((0 + 1 + 0) / 3)  # over the correct object tokens
    assert paired["deletion_auc_pixel"][0] == pytest.approx((-1 + 0 + 0) / 3)
    assert paired["causal_pointing"]["square→triangle"] == [1.0, 1.0, 1.0]
    assert paired["causal_pointing"]["object"][0] == pytest.approx(-0.5)
