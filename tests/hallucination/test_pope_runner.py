"""The POPE runner on a tiny J: what a row holds, resuming after a crash, torn lines, missing images, image
paths that leave the images folder, shards, and memory that holds one batch of embeddings at a time."""

import dataclasses
import json
import weakref
from pathlib import Path

import pytest
import torch

from owlens.evaluation.toy_pope import build_toy_pope
from owlens.hallucination import runner
from owlens.hallucination.answers import parse_answer
from owlens.hallucination.pope_format import read_questions, write_questions
from owlens.hallucination.runner import PopeRunConfig, merge_parts, part_paths, run_pope
from owlens.toyworld.tiny import tiny_joint, tiny_processor

CONFIG = PopeRunConfig(batch_size=4, max_new_tokens=2)


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, processor=tiny_processor())


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_pope(tmp_path_factory.mktemp("toy"), seed=1, n_images=6, calibration_images=2,
                          statistics_scenes=300)


def _run(model, toy, out, **kwargs):
    options = {"progress": False, "log": lambda *_: None, **kwargs}
    return run_pope(model, toy.questions["random"], toy.images, out, kwargs.pop("config", CONFIG),
                    **{k: v for k, v in options.items() if k != "config"})


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ids(toy):
    return [q.question_id for q in read_questions(toy.questions["random"])]


def test_a_row_holds_the_answer_and_the_detectors_verdict_from_the_same_embedding(model, toy, tmp_path):
    result = _run(model, toy, tmp_path / "a.jsonl")
    rows = _rows(tmp_path / "a.jsonl")
    assert [r["question_id"] for r in rows] == _ids(toy) and result.answered == len(rows) and result.skipped == 0
    row = rows[0]
    assert row["parsed"] == parse_answer(row["answer"]) and 0 <= row["p_yes"] <= 1
    assert row["query"] == f"a photo of a {row['object']}" and row["question"].startswith("is there a ")
    with torch.no_grad():
        embedding = model.encode_images(toy.images / row["image"])
        logits = model.detect(embedding, [row["query"]]).logits[0, :, 0]
        prompt = model.processor.chat(row["question"])
        answer = model.generate(embedding, [prompt], max_new_tokens=2).texts[0]
    assert row["presence_logit"] == pytest.approx(float(logits.max()), abs=1e-5)
    assert row["presence"] == pytest.approx(float(torch.sigmoid(logits.max())), abs=1e-6)
    assert row["answer"] == answer
    assert row["flag"] == ((row["parsed"] == "yes") != (row["presence"] > 0.5))


def test_resume_after_a_crash_neither_loses_nor_repeats_a_row(model, toy, tmp_path, monkeypatch):
    _run(model, toy, tmp_path / "straight.jsonl")
    answer, calls = runner._answer, []

    def crash_on_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected")
        return answer(*args)

    monkeypatch.setattr(runner, "_answer", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="injected"):
        _run(model, toy, tmp_path / "resumed.jsonl")
    assert len(_rows(tmp_path / "resumed.jsonl")) == 2 * CONFIG.batch_size  # every finished row, flushed
    monkeypatch.setattr(runner, "_answer", answer)
    with (tmp_path / "resumed.jsonl").open("a") as handle:
        handle.write('{"question_id": 99, "image": "torn')  # a kill in the middle of a write
    result = _run(model, toy, tmp_path / "resumed.jsonl")
    assert result.resumed == 2 * CONFIG.batch_size
    straight, resumed = _rows(tmp_path / "straight.jsonl"), _rows(tmp_path / "resumed.jsonl")
    assert [r["question_id"] for r in resumed] == _ids(toy)
    for a, b in zip(straight, resumed):
        assert a["answer"] == b["answer"] and a["presence_logit"] == pytest.approx(b["presence_logit"], abs=1e-5)
    assert _run(model, toy, tmp_path / "resumed.jsonl").answered == 0  # nothing left to do


def test_a_missing_image_is_reported_skipped_and_retried(model, toy, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in toy.images.iterdir() if "_test_" in p.name)
    for name in names[1:]:
        (images / name).write_bytes((toy.images / name).read_bytes())
    (images / names[2]).write_bytes(b"not a png")
    messages = []
    result = run_pope(model, toy.questions["random"], images, tmp_path / "a.jsonl", CONFIG, progress=False,
                      log=messages.append)
    asked = list(read_questions(toy.questions["random"]))
    lost = [q for q in asked if q.image in names[:3] and q.image != names[1]]
    assert result.skipped == len(lost) and set(result.missing_images) == {names[0], names[2]}
    assert len(messages) == 2 and names[0] in messages[0] and "image not found" in messages[0]
    (images / names[0]).write_bytes((toy.images / names[0]).read_bytes())
    (images / names[2]).write_bytes((toy.images / names[2]).read_bytes())
    again = run_pope(model, toy.questions["random"], images, tmp_path / "a.jsonl", CONFIG, progress=False)
    assert again.answered == len(lost)
    assert sorted(r["question_id"] for r in _rows(tmp_path / "a.jsonl")) == sorted(_ids(toy))


def test_shards_merge_into_one_file_in_question_order(model, toy, tmp_path):
    out = tmp_path / "a.jsonl"
    for index in (1, 0):
        _run(model, toy, out, shard=(index, 2))
    assert len(part_paths(out)) == 2 and not out.exists()
    assert merge_parts(out, toy.questions["random"]) == len(_ids(toy))
    assert [r["question_id"] for r in _rows(out)] == _ids(toy) and not part_paths(out)
    with pytest.raises(ValueError, match="expected a shard"):
        _run(model, toy, out, shard=(2, 2))


def test_another_question_file_into_the_same_answers_is_refused(model, toy, tmp_path):
    _run(model, toy, tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="holds an answer to another question"):
        run_pope(model, toy.questions["adversarial"], toy.images, tmp_path / "a.jsonl", CONFIG, progress=False)


def test_duplicate_question_ids_are_refused(model, toy, tmp_path):
    lines = toy.questions["random"].read_text().splitlines()
    (tmp_path / "q.json").write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(ValueError, match="appears twice"):
        run_pope(model, tmp_path / "q.json", toy.images, tmp_path / "a.jsonl", CONFIG, progress=False)


def test_memory_holds_one_batch_of_embeddings_and_reads_questions_lazily(model, toy, tmp_path, monkeypatch):
    alive, most, read = weakref.WeakSet(), [0], [0]
    encode, reader = model.encode_images, runner.read_questions

    def tracked_encode(images):
        embedding = encode(images)
        alive.add(embedding)
        most[0] = max(most[0], len(alive))
        return embedding

    def counted(path):
        for question in reader(path):
            read[0] += 1
            yield question

    monkeypatch.setattr(model, "encode_images", tracked_encode)
    monkeypatch.setattr(runner, "read_questions", counted)
    first_write = []
    monkeypatch.setattr(runner.Journal, "append", lambda self, row: first_write.append(read[0]))
    _run(model, toy, tmp_path / "a.jsonl")
    total = len(_ids(toy))
    assert most[0] == 1  # the previous batch's embeddings are gone before the next batch is encoded
    # The counting pass reads the file once; the answering pass had read one batch (+1) when it first wrote.
    assert first_write[0] <= total + CONFIG.batch_size + 1


def test_image_paths_leaving_the_images_folder_are_skipped_and_never_read(model, toy, tmp_path, monkeypatch):
    images, outside = tmp_path / "images", tmp_path / "outside"
    images.mkdir()
    outside.mkdir()
    for path in toy.images.iterdir():
        (images / path.name).write_bytes(path.read_bytes())
        (outside / path.name).write_bytes(path.read_bytes())  # readable images, in the wrong place
    asked = list(read_questions(toy.questions["random"]))
    (images / "link.png").symlink_to(outside / asked[2].image)
    escaping = [str(outside / asked[0].image), f"../outside/{asked[1].image}", "link.png"]
    crafted = [dataclasses.replace(q, image=name) for q, name in zip(asked, escaping)] + asked[3:]
    write_questions(tmp_path / "q.json", crafted)
    opened, load = [], runner.load_image
    monkeypatch.setattr(runner, "load_image", lambda path: opened.append(path) or load(path))
    messages = []
    result = run_pope(model, tmp_path / "q.json", images, tmp_path / "a.jsonl", CONFIG, progress=False,
                      log=messages.append)
    assert result.skipped == 3 and result.answered == len(asked) - 3 and list(result.missing_images) == escaping
    assert all(images.resolve() in Path(p).parents for p in opened), opened  # nothing outside was opened
    assert len(messages) == 3
    for name, message, why in zip(escaping, messages, ("absolute path", "climbs out", "through a link")):
        assert message.startswith(f"skipping the questions on {name}: image: ") and why in message, message
    assert {r["image"] for r in _rows(tmp_path / "a.jsonl")}.isdisjoint(escaping)
