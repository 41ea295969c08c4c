"""POPE's files: streaming reads, clear errors, the object of every question, torn-line tolerant answers."""

import json

import pytest

from owlens.hallucination.pope_format import PopeQuestion, object_of, read_questions, read_rows, write_questions


@pytest.mark.parametrize("question, expected", [
    ("Is there a dining table in the image?", "dining table"),
    ("Is there an apple in the image?", "apple"),
    ("is there a star ?", "star"),
    ("is there a red circle ?", "red circle"),
    ("  Is there a person in the picture ? ", "person"),
])
def test_object_of(question, expected):
    assert object_of(question) == expected


@pytest.mark.parametrize("question", ["What is this?", "Is there a in the image", ""])
def test_object_of_refuses_other_questions(question):
    with pytest.raises(ValueError, match="expected a POPE question"):
        object_of(question)


def test_every_real_pope_question_has_an_object(pope_files):
    for split, path in pope_files.items():
        questions = list(read_questions(path))
        assert len(questions) == 3000, split
        assert all(object_of(q.text) for q in questions)
        assert {q.label for q in questions} == {"yes", "no"}


def test_round_trip_and_errors(tmp_path):
    path = tmp_path / "q.json"
    written = [PopeQuestion(1, "a.jpg", "Is there a cat in the image?", "yes"), PopeQuestion("x", "b.jpg", "Is there "
                                                                                           "a dog in the image?")]
    assert write_questions(path, written) == 2
    assert list(read_questions(path)) == written
    path.write_text('{"question_id": 1, "image": "a.jpg"}\n')
    with pytest.raises(ValueError, match=r"q.json:1: expected a JSON object"):
        list(read_questions(path))
    path.write_text('{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"}\n')
    with pytest.raises(ValueError, match="label must be"):
        list(read_questions(path))
    with pytest.raises(FileNotFoundError, match="POPE file not found"):
        list(read_questions(tmp_path / "none.json"))


def test_read_rows_ignores_only_a_torn_last_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"answer": "yes"}) + "\n" + '{"answer": "n')
    assert read_rows(path) == [{"answer": "yes"}]
    path.write_text('{"answer": "n\n' + json.dumps({"answer": "yes"}) + "\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        read_rows(path)
