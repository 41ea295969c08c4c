"""``owlens explain`` on the tiny checkpoints: files per token, and clear one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from owlens.cli import main


def test_one_token_writes_overlay_boxes_json_and_map(tiny_model_args, image, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", image, "--prompt", "what is in the image ?", "--token", "circle", "--out", str(out),
                 *tiny_model_args])
    assert code == 0
    assert "'circle'" in capsys.readouterr().out
    stem = out / "scene-00-circle"
    payload = json.loads(stem.with_name(stem.name + ".json").read_text())
    assert payload["token"] == "circle" and payload["query"] == "a photo of a circle" and payload["method"] == "ga"
    assert len(payload["class_weights"]) == 16 and payload["map_shape"] == [48, 64]
    saliency_map = np.load(stem.with_name(stem.name + ".npy"))
    assert saliency_map.shape == (48, 64) and saliency_map.max() == 1.0 and saliency_map.min() >= 0.0
    for suffix in ("-overlay.png", "-boxes.png"):
        drawn = Image.open(stem.with_name(stem.name + suffix))
        assert drawn.size[0] >= 64 and drawn.size[0] * 48 == drawn.size[1] * 64


def test_all_tokens_and_a_custom_query(tiny_model_args, image, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", image, "--prompt", "what is in the image ?", "--all-tokens", "--max-new-tokens", "3",
                 "--query", "a photo of a star", "--out", str(out), *tiny_model_args])
    assert code == 0
    written = sorted(p.name for p in out.glob("*.json") if p.name != "run.json")  # run.json: the report's
    captured = capsys.readouterr()
    assert len(written) == len(captured.out.strip().splitlines()) == 3
    assert all(json.loads((out / name).read_text())["query"] == "a photo of a star" for name in written)
    # The random tiny LM never says </s> within 3 tokens: the cut is said, once.
    assert captured.err.count("the answer was cut at 3 tokens (--max-new-tokens)") == 1


def test_unknown_token_is_one_clear_error(tiny_model_args, image, tmp_path, capsys):
    code = main(["explain", image, "--prompt", "what is in the image ?", "--token", "zebra", "--out",
                 str(tmp_path), *tiny_model_args])
    assert code == 2
    assert "'zebra' is not in the MLLM's vocabulary" in capsys.readouterr().err


def test_token_or_all_tokens_is_required(image):
    with pytest.raises(SystemExit):
        main(["explain", image, "--prompt", "what is in the image ?"])


def test_overlay_colours_and_refuses_a_map_of_another_size():
    from owlens.viz.heatmap import colorize, overlay

    colours = colorize(np.array([[0.0, 1.0, 2.0]]))
    assert colours.dtype == np.uint8 and colours.shape == (1, 3, 3)
    assert colours[0, 0].sum() < colours[0, 1].sum() and (colours[0, 1] == colours[0, 2]).all()  # clipped
    picture = Image.new("RGB", (8, 4))
    assert overlay(picture, np.zeros((4, 8)), scale=2).size == (16, 8)
    with pytest.raises(ValueError, match="the map is 4x8 but the image is 8x4"):
        overlay(picture, np.zeros((8, 4)))


def test_cli_methods_are_the_registry():
    from owlens.cli.explain import _METHODS
    from owlens.explain.registry import METHODS

    assert _METHODS == tuple(METHODS)


def test_a_method_without_boxes_writes_map_and_json_only(tiny_model_args, image, tmp_path):
    out = tmp_path / "maps"
    code = main(["explain", image, "--prompt", "what is in the image ?", "--token", "circle", "--method", "gradient",
                 "--out", str(out), *tiny_model_args])
    assert code == 0
    # beside the run folder's own run.json, images/ and maps/: the token's overlay, map and explanation
    assert sorted(p.suffix for p in out.iterdir() if p.is_file() and p.name != "run.json") == [".json", ".npy", ".png"]
    assert not list(out.glob("*-boxes.png"))
    assert main(["report", str(out)]) == 0


def test_object_attribution_names_the_objects_it_rests_on(tiny_model_args, image, tmp_path, capsys):
    out = tmp_path / "out"
    vocabulary = tmp_path / "concepts.txt"
    vocabulary.write_text("a photo of a circle\na photo of a red star\n")
    code = main(["explain", image, "--prompt", "what is in the image ?", "--token", "circle", "--method",
                 "object_attribution", "--vocabulary", f"@{vocabulary}", "--out", str(out), *tiny_model_args])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    payload = json.loads((out / "scene-00-circle.json").read_text())
    assert len(lines) == 1 + len(payload["objects"]) and payload["objects"]
    for line, obj in zip(lines[1:], payload["objects"]):
        name = obj["concept"].removeprefix("a photo of a ")
        assert line.strip().startswith(f"'circle' rests on the object OWL reads as '{name}'")
        assert f"→ {obj['logit_without']:.1f}" in line and obj["concept"] in ("a photo of a circle",
                                                                             "a photo of a red star")
        first_gone = obj["logit_without_first"]  # the first object's is None: nothing is gone before it
        assert first_gone is None or obj is not payload["objects"][0]
        assert line.endswith("" if first_gone is None else f", {first_gone:.1f} with the first object gone too")
    code = main(["explain", image, "--prompt", "what is in the image ?", "--token", "circle", "--method",
                 "object_attribution", "--vocabulary", " , ", "--out", str(out), *tiny_model_args])
    assert code == 2 and "--vocabulary: expected at least one concept" in capsys.readouterr().err
