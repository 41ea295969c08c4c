"""The CLI is thin: each command calls the library and prints or writes; failures are one clear line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from owlens.cli import main


def test_help_runs_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "owlens.cli", "--help"], capture_output=True, text=True,
                            check=True)
    assert "shared vision embedding" in result.stdout.lower() or "shared" in result.stdout
    assert "describe" in result.stdout and "detect" in result.stdout


def test_detect_json_and_drawing(tiny_model_args, image, tmp_path, capsys):
    out = tmp_path / "boxes.png"
    code = main(["detect", image, "--query", "a photo of a star", "--query", "a photo of a red circle",
                 "--json", "--threshold", "0", "--max-per-query", "2", "--out", str(out),
                 *tiny_model_args])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["presence"]) == {"a photo of a star", "a photo of a red circle"}
    assert len(payload["boxes"]) == 4 and all(0 <= b["score"] <= 1 for b in payload["boxes"])
    assert Image.open(out).size[0] >= 64


def test_describe_answers_and_is_repeatable(tiny_model_args, image, capsys):
    args = ["describe", image, "--prompt", "is there a star ?", "--max-new-tokens", "4", "--json",
            *tiny_model_args]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first and len(first["token_ids"]) <= 4


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_corrupt_image_is_one_clear_error(tiny_model_args, tmp_path, capsys, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    assert main(["detect", str(bad), "--query", "a photo of a star", *tiny_model_args]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_missing_checkpoint_is_one_clear_error(tiny_model_args, image, tmp_path, capsys):
    args = list(tiny_model_args)
    args[args.index("--owl") + 1] = str(tmp_path / "no-owl")
    assert main(["detect", image, "--query", "a photo of a star", *args]) == 2
    assert "detector (owl) weights not found" in capsys.readouterr().err


def test_one_scenes_flag_old_names_still_parse_but_are_not_shown(capsys):
    from owlens.cli import build_parser

    parser = build_parser()
    for argv, old in ((["evaluate", "bias"], "--n-scenes"), (["evaluate", "hallucination"], "--images"),
                      (["pope", "toy", "out"], "--images")):
        assert parser.parse_args([*argv, old, "7"]).scenes == 7
        assert parser.parse_args([*argv, "--scenes", "7"]).scenes == 7
        with pytest.raises(SystemExit):
            parser.parse_args([*argv[:2], "--help"])
        shown = capsys.readouterr().out
        assert "--scenes N" in shown and old not in shown and "(default: 0)" in shown  # --seed's default too
    assert parser.parse_args(["evaluate", "bias"]).no_progress is True  # its stderr carries the log: bar off
    assert parser.parse_args(["evaluate", "bias", "--progress"]).no_progress is False
    assert parser.parse_args(["evaluate", "saliency", "--no-progress"]).no_progress is True
