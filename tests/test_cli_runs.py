"""Run folders from the command line: bad input is one line and exit 2 with nothing written, every run folder
renders, a second run or a resume with other weights is refused, Ctrl-C and OS errors are one line."""

import json
import os
import subprocess
import sys

import pytest

from owlens.cli import build_parser, main
from owlens.hallucination.pope_format import PopeQuestion, write_questions


def _one_line_error(capsys) -> str:
    """The error, one line; a tiny model has no calibration, whose one-line notice may come before it."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines()
             if not line.startswith("owlens: no grounding calibration")]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.fixture
def scratch(tmp_path, image):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    return tmp_path


# (arguments, what the error says); {tmp} is the test's folder, {image} a readable image.
BAD = {
    "pope batch 0": (["pope", "run", "q.json", "--images", ".", "--out", "{tmp}/a.jsonl", "--batch-size", "0"],
                     "integer >= 1"),
    "pope threshold": (["pope", "run", "q.json", "--images", ".", "--out", "{tmp}/a.jsonl", "--threshold", "5"],
                       "probability strictly between 0 and 1"),
    "pope max tokens": (["pope", "run", "q.json", "--images", ".", "--out", "{tmp}/a.jsonl", "--max-new-tokens",
                         "-1"], "integer >= 1"),
    "pope out dir": (["pope", "run", "{tmp}/q.json", "--images", "{tmp}", "--out", "{tmp}/dir"],
                     "expected an answers file"),
    "bias n-scenes 0": (["evaluate", "bias", "--n-scenes", "0"], "integer >= 2"),
    "bias epsilon": (["evaluate", "bias", "--epsilon", "-1"], "number > 0"),
    "bias region": (["evaluate", "bias", "--region", "1.5"], "number in [0, 1]"),
    "bias out file": (["evaluate", "bias", "--out", "{tmp}/file.txt"], "expected a folder"),
    "explain boxes": (["explain", "{image}", "--prompt", "p", "--token", "a", "--boxes", "-3"], "integer >= 0"),
    "explain out file": (["explain", "{image}", "--prompt", "p", "--token", "a", "--out", "{tmp}/file.txt"],
                         "expected a folder"),
    "check out dir": (["check", "{image}", "--prompt", "p", "--out", "{tmp}/dir"], "expected a PNG file"),
    "check threshold": (["check", "{image}", "--prompt", "p", "--threshold", "nan"], "probability"),
    "detect threshold": (["detect", "{image}", "--query", "a", "--threshold", "5"], "probability in [0, 1]"),
    "detect max": (["detect", "{image}", "--query", "a", "--max-per-query", "0"], "integer >= 1"),
    "describe temperature": (["describe", "{image}", "--prompt", "p", "--temperature", "0"], "number > 0"),
    "report side": (["report", "{tmp}", "--max-map-side", "0"], "integer >= 1"),
    "report not a run": (["report", "{tmp}/dir"], "is not a run folder"),
    "saliency scenes": (["evaluate", "saliency", "--scenes", "0"], "integer >= 1"),
    "saliency out file": (["evaluate", "saliency", "--out", "{tmp}/file.txt"], "expected a folder"),
    "hallucination batch": (["evaluate", "hallucination", "--batch-size", "0"], "integer >= 1"),
    "bias layer": (["evaluate", "bias", "--layer", "-1"], "expected E or an encoder layer"),
    "bias layer word": (["evaluate", "bias", "--layer", "last"], "expected E or an encoder layer"),
    "align lr": (["align", "train", "--owl", "o", "--mllm", "m", "--images", "i", "--out", "o", "--lr", "0"],
                 "number > 0"),
    "align decay": (["align", "train", "--owl", "o", "--mllm", "m", "--images", "i", "--out", "o",
                     "--weight-decay", "2"], "number in [0, 1)"),
    "align every": (["align", "train", "--owl", "o", "--mllm", "m", "--images", "i", "--out", "o",
                     "--checkpoint-every", "0"], "integer >= 1"),
    "toy images": (["pope", "toy", "{tmp}/toy", "--images", "0"], "integer >= 1"),
    "bias spec out file": (["bias", "examples/bias/toy.yaml", "--out", "{tmp}/file.txt"], None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(case, scratch, image, capsys):
    arguments, expected = BAD[case]
    before = sorted(p.name for p in scratch.rglob("*"))
    argv = [a.format(tmp=scratch, image=image) for a in arguments]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses at parse time
        code = exit_.code
    assert code == 2
    err = _one_line_error(capsys)
    if expected:
        assert expected in err
    assert sorted(p.name for p in scratch.rglob("*")) == before


def test_every_option_s_default_is_in_the_help():
    import argparse

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = []
    for parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                if action.help and "default" not in action.help and f"(default: {action.default})" not in text:
                    missing.append(f"{parser.prog} {action.option_strings[0]}")
                elif not action.help:
                    missing.append(f"{parser.prog} {action.option_strings[0]} (no help)")
    assert not missing


# -- POPE: a run folder that renders, one writer, a resume with other weights refused ------------------------

@pytest.fixture
def pope(tmp_path, image):
    images = tmp_path / "images"
    images.mkdir()
    os.replace(image, images / "a.png")
    write_questions(tmp_path / "q.json", [PopeQuestion(1, "a.png", "Is there a circle in the image?", "yes"),
                                          PopeQuestion(2, "a.png", "Is there a star in the image?", "no"),
                                          PopeQuestion(3, "b.png", "Is there a cross in the image?", "no")])
    return tmp_path


def _pope(folder, model_args, *more):
    return main(["pope", "run", str(folder / "q.json"), "--images", str(folder / "images"), "--out",
                 str(folder / "answers.jsonl"), "--max-new-tokens", "2", "--threshold", "0.99", "--no-progress",
                 *model_args, *more])


def test_a_pope_run_renders_and_refuses_other_weights_on_resume(pope, tiny_model_args, tiny_checkpoints, capsys,
                                                               tmp_path_factory):
    assert _pope(pope, tiny_model_args) == 0
    assert main(["report", str(pope / "answers.run")]) == 0
    run = json.loads((pope / "answers.run" / "run.json").read_text())
    flagged = [r for r in map(json.loads, (pope / "answers.jsonl").read_text().splitlines()) if r["flag"]]
    assert len(run["items"]) == len(run["tables"][0]["rows"]) == len(flagged) and "q" in run["pope"]
    capsys.readouterr()
    from owlens.toyworld.tiny import save_tiny_checkpoints

    other = save_tiny_checkpoints(tmp_path_factory.mktemp("other"), seed=1)
    args = list(tiny_model_args)
    args[args.index("--projector") + 1] = str(other["projector"])
    rows = (pope / "answers.jsonl").read_bytes()
    assert _pope(pope, args) == 2
    assert "other weights" in _one_line_error(capsys) and (pope / "answers.jsonl").read_bytes() == rows


def test_a_second_pope_run_on_one_out_is_refused(pope, tiny_model_args, capsys):
    hold = ("import sys, time\nfrom owlens.persist.lock import lock_beside\nwith lock_beside(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", hold, str(pope / "answers.jsonl")], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert _pope(pope, tiny_model_args) == 2
        assert f"in use by another run (pid {child.pid}" in _one_line_error(capsys)
        assert not (pope / "answers.jsonl").exists()
    finally:
        child.kill()
        child.wait()


def test_a_pope_run_with_no_readable_image_is_one_line_and_exit_2(pope, tiny_model_args, capsys):
    os.replace(pope / "images" / "a.png", pope / "a.png")
    assert _pope(pope, tiny_model_args) == 2
    assert "none of the 2 images" in _one_line_error_after_skips(capsys) and not (pope / "answers.run").exists()
    os.replace(pope / "a.png", pope / "images" / "a.png")  # put back: the rerun answers what it can
    assert _pope(pope, tiny_model_args) == 0
    assert len((pope / "answers.jsonl").read_text().splitlines()) == 2


def _one_line_error_after_skips(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("owlens pope: error:")
    return err[-1]


def test_a_torn_last_line_is_dropped_and_redone(pope, tiny_model_args):
    assert _pope(pope, tiny_model_args) == 0
    whole = (pope / "answers.jsonl").read_text().splitlines()
    (pope / "answers.jsonl").write_text(whole[0] + "\n" + whole[1][:20])
    assert _pope(pope, tiny_model_args) == 0
    again = (pope / "answers.jsonl").read_text().splitlines()
    assert [json.loads(r)["question_id"] for r in again] == [json.loads(r)["question_id"] for r in whole]


def test_ctrl_c_is_one_line_and_exit_130(pope, tiny_model_args, capsys, monkeypatch):
    from owlens.hallucination import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_answer", interrupted)
    assert _pope(pope, tiny_model_args) == 130
    err = capsys.readouterr().err  # after the run's own notice about the missing b.png
    assert "Traceback" not in err and "interrupted; what was written is kept" in err.strip().splitlines()[-1]


def test_a_full_disk_is_one_line(pope, tiny_model_args, capsys, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (disk / "filler").write_bytes(b"\0" * (60 * 1024))
        code = main(["pope", "run", str(pope / "q.json"), "--images", str(pope / "images"), "--out",
                     str(disk / "answers.jsonl"), "--max-new-tokens", "2", "--no-progress", *tiny_model_args])
        assert code == 2
        assert "No space left on device" in _one_line_error(capsys)
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_saliency_evaluation_folder_renders(tiny_model_args, tmp_path, capsys):
    out = tmp_path / "sal"
    assert main(["evaluate", "saliency", "--scenes", "2", "--steps", "2", "--methods", "ga,random", "--json",
                 "--no-progress", "--out", str(out), *tiny_model_args]) == 0
    assert main(["report", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["items"] == [] and [r[0] for r in run["tables"][0]["rows"]] == ["ga", "random"]


@pytest.mark.parametrize("damage", ["garbage weights", "owl as mllm"])
def test_unloadable_weights_are_one_line(damage, tmp_path, image, capsys):
    from owlens.toyworld.tiny import save_tiny_checkpoints

    paths = {k: str(v) for k, v in save_tiny_checkpoints(tmp_path / "tiny").items()}
    if damage == "garbage weights":
        for weights in (tmp_path / "tiny" / "mllm").glob("*.safetensors"):
            weights.write_bytes(b"garbage")
    else:
        paths["mllm"] = paths["owl"]
    capsys.readouterr()  # the checkpoints' own save bars
    code = main(["describe", image, "--prompt", "hi", "--owl", paths["owl"], "--mllm", paths["mllm"],
                 "--projector", paths["projector"], "--device", "cpu"])
    assert code == 2 and "MLLM (mllm) weights" in _one_line_error(capsys)


@pytest.fixture
def read_only(tmp_path):
    """A folder no run may write: mode 555, or, as root (whom mode bits do not stop), a read-only tmpfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip("running as root, which writes through a folder's mode bits, and a read-only tmpfs cannot be "
                    "mounted here: no folder this test could make read-only")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)])


# Every command that writes, pointed at a folder it cannot write: {ro} is that folder, {pope} the POPE fixture's.
UNWRITABLE = {
    "pope run": ["pope", "run", "{pope}/q.json", "--images", "{pope}/images", "--out", "{ro}/answers.jsonl",
                 "--max-new-tokens", "2", "--no-progress"],
    "pope toy": ["pope", "toy", "{ro}/toy", "--images", "2", "--calibration-images", "2"],
    "bias": ["bias", "{pope}/spec.yaml", "--out", "{ro}/bias", "--no-progress"],
    "evaluate saliency": ["evaluate", "saliency", "--scenes", "1", "--steps", "2", "--methods", "random",
                          "--out", "{ro}/saliency", "--no-progress"],
    "evaluate hallucination": ["evaluate", "hallucination", "--out", "{ro}/hallucination", "--no-progress"],
    "evaluate bias": ["evaluate", "bias", "--n-scenes", "2", "--out", "{ro}/bias"],
    "explain": ["explain", "{image}", "--prompt", "p", "--token", "a", "--out", "{ro}/explain"],
    "check": ["check", "{image}", "--prompt", "p", "--out", "{ro}/boxes.png"],
    "detect": ["detect", "{image}", "--query", "a", "--out", "{ro}/boxes.png"],
    "calibrate": ["calibrate", "--save-to", "{ro}/calibration"],
    "report": ["report", "{pope}", "--out", "{ro}/report.html"],
    "align train": ["align", "train", "--images", "{pope}/images", "--out", "{ro}/w"],
    "demo": ["demo", "--out", "{ro}/demo"],
    "toyworld train": ["toyworld", "train", "--out", "{ro}/toyworld"],
}
_NO_MODEL_ARGS = ("pope toy", "report", "demo", "toyworld train")  # they take no --owl/--mllm, or only some


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail loudly if a command loads a model: an unwritable --out must be refused before that."""
    from owlens.models.joint import JointModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(JointModel, "from_pretrained", refuse)


@pytest.mark.parametrize("command", sorted(UNWRITABLE))
def test_an_unwritable_out_is_refused_before_any_model_loads(command, read_only, pope, image, tiny_model_args,
                                                            tiny_checkpoints, no_model_loads, capsys):
    import yaml

    (pope / "spec.yaml").write_text(yaml.safe_dump({
        "images": str(pope / "images"), "traits": ["heavy"],
        "groups": [{"name": "g", "folder": ".", "c_minus": "a red circle", "c_plus": "a blue circle"}]}))
    argv = [a.format(ro=read_only, pope=pope, image=image) for a in UNWRITABLE[command]]
    if command == "align train":
        argv += ["--owl", tiny_checkpoints["owl"], "--mllm", tiny_checkpoints["mllm"], "--device", "cpu"]
    elif command not in _NO_MODEL_ARGS:
        argv += tiny_model_args
    before = sorted(p.name for p in pope.rglob("*"))
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert ("Permission denied" in err or "Read-only file system" in err) and str(read_only) in err, err
    assert not any(read_only.iterdir())
    assert sorted(p.name for p in pope.rglob("*")) == before


@pytest.mark.parametrize("command", ["pope run", "explain", "detect", "evaluate saliency", "toyworld train"])
def test_an_out_below_a_file_is_refused_naming_the_file(command, pope, image, tiny_model_args, no_model_loads,
                                                         capsys):
    (pope / "file.txt").write_text("x")
    blocked = pope / "file.txt" / "below"
    argv = [a.format(ro=blocked, pope=pope, image=image) for a in UNWRITABLE[command]]
    assert main([*argv, *(() if command in _NO_MODEL_ARGS else tiny_model_args)]) == 2
    assert f"{pope / 'file.txt'} is a file, not a folder" in _one_line_error(capsys)


# -- a resume that is not the same computation is refused, with nothing rewritten ------------------------------

@pytest.fixture
def other_projector_args(tiny_model_args, tmp_path_factory):
    """The tiny model's flags with another W (same shapes, other seed)."""
    from owlens.toyworld.tiny import save_tiny_checkpoints

    other = save_tiny_checkpoints(tmp_path_factory.mktemp("other"), seed=1)
    args = list(tiny_model_args)
    args[args.index("--projector") + 1] = str(other["projector"])
    return args


def _bias_folder(pope):
    import yaml

    (pope / "spec.yaml").write_text(yaml.safe_dump({
        "images": str(pope / "images"), "traits": ["heavy"], "max_new_tokens": 2,
        "statistics": {"resamples": 50, "permutations": 50},
        "groups": [{"name": "g", "folder": ".", "c_minus": "a red circle", "c_plus": "a blue circle"}]}))
    return ["bias", str(pope / "spec.yaml"), "--out", str(pope / "bias"), "--no-progress"]


@pytest.mark.parametrize("change", ["another W", "an image added"])
def test_a_bias_resume_that_is_not_the_same_run_is_refused(change, pope, tiny_model_args, other_projector_args,
                                                          capsys):
    argv = _bias_folder(pope)
    assert main([*argv, *tiny_model_args]) == 0
    kept = {p.name: p.read_bytes() for p in (pope / "bias").iterdir() if p.is_file()}
    if change == "another W":
        model_args, expected = other_projector_args, "other weights"
    else:
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 30, 30)).save(pope / "images" / "new.png")
        model_args, expected = tiny_model_args, "other inputs"
    capsys.readouterr()
    assert main([*argv, *model_args]) == 2
    assert expected in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in (pope / "bias").iterdir() if p.is_file()} == kept


def test_a_saliency_evaluation_resume_with_another_w_is_refused(tiny_model_args, other_projector_args, tmp_path,
                                                               capsys):
    out = tmp_path / "sal"
    argv = ["evaluate", "saliency", "--scenes", "1", "--steps", "2", "--methods", "random", "--json",
            "--no-progress", "--out", str(out)]
    assert main([*argv, *tiny_model_args]) == 0
    rows = (out / "saliency-cases.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*argv, *other_projector_args]) == 2
    assert "other weights" in _one_line_error(capsys)
    assert (out / "saliency-cases.jsonl").read_bytes() == rows
