"""POPE's answer parsing and metrics, checked against a transcription of its reference evaluate.py."""

import json

import pytest
import torch

from owlens.hallucination.answers import p_yes, parse_answer, yes_no_token_ids
from owlens.hallucination.scores import pope_scores

TRICKY = [
    ("No.", "no"), ("No", "no"), ("no", "no"), ("NO", "yes"), ("not sure", "no"), ("Not sure", "yes"),
    ("Yes, there is no dog.", "no"), ("Yes, there is a dog. No cat.", "yes"), ("", "yes"), ("no, there isn't", "no"),
    ("No, there is not.", "no"), ("Yes.", "yes"), ("yes", "yes"), ("Nope", "yes"), ("no.", "no"),
    ("There is no\ndog", "yes"), ("There is\tno dog", "yes"), ("No\n", "yes"), (" no", "no"), ("no!", "yes"),
    ("I cannot tell", "yes"), ("nothing", "yes"), ("Yes,no", "yes"), ("1. No", "yes"), ("...no", "yes"),
]


def reference_pope(answers: list[dict], labels: list[str]) -> dict:
    """POPE's evaluate.py (RUCAIBox/POPE), transcribed line for line; prints replaced by a return."""
    label_list = list(labels)
    for answer in answers:
        text = answer["answer"]
        if text.find(".") != -1:
            text = text.split(".")[0]
        text = text.replace(",", "")
        words = text.split(" ")
        if "No" in words or "not" in words or "no" in words:
            answer["answer"] = "no"
        else:
            answer["answer"] = "yes"
    for i in range(len(label_list)):
        label_list[i] = 0 if label_list[i] == "no" else 1
    pred_list = [0 if answer["answer"] == "no" else 1 for answer in answers]
    pos, neg = 1, 0
    yes_ratio = pred_list.count(1) / len(pred_list)
    TP, TN, FP, FN = 0, 0, 0, 0
    for pred, label in zip(pred_list, label_list):
        if pred == pos and label == pos:
            TP += 1
        elif pred == pos and label == neg:
            FP += 1
        elif pred == neg and label == neg:
            TN += 1
        elif pred == neg and label == pos:
            FN += 1
    precision = float(TP) / float(TP + FP)
    recall = float(TP) / float(TP + FN)
    f1 = 2 * precision * recall / (precision + recall)
    acc = (TP + TN) / (TP + TN + FP + FN)
    return {"accuracy": acc, "precision": precision, "recall": recall, "f1": f1, "yes_ratio": yes_ratio}


@pytest.mark.parametrize("text, expected", TRICKY)
def test_parse_matches_the_reference(text, expected):
    assert parse_answer(text) == expected
    reference = [{"answer": text}, {"answer": "Yes"}]  # a sure "yes" keeps the reference off a zero division
    reference_pope(reference, ["yes", "yes"])
    assert reference[0]["answer"] == expected


def test_metrics_equal_the_reference_exactly():
    texts = [t for t, _ in TRICKY] * 3
    labels = ["yes" if i % 3 else "no" for i in range(len(texts))]
    expected = reference_pope([{"answer": t} for t in texts], labels)
    scores = pope_scores([parse_answer(t) for t in texts], labels).to_dict()
    assert {k: scores[k] for k in expected} == expected  # exact, not approximate


def test_metrics_by_hand_and_degenerate_cases():
    scores = pope_scores(["yes", "yes", "no", "no", "yes"], ["yes", "no", "no", "yes", "yes"])
    assert (scores.tp, scores.fp, scores.tn, scores.fn) == (2, 1, 1, 1)
    assert scores.accuracy == 3 / 5 and scores.precision == 2 / 3 and scores.recall == 2 / 3
    assert scores.f1 == pytest.approx(2 / 3) and scores.yes_ratio == 3 / 5
    never_yes = pope_scores(["no", "no"], ["yes", "no"])  # the reference divides by zero here
    assert never_yes.precision == 0.0 and never_yes.f1 == 0.0 and never_yes.accuracy == 0.5
    with pytest.raises(ValueError, match="one label per answer"):
        pope_scores(["yes"], ["yes", "no"])


def test_real_pope_labels_score_perfectly_against_themselves(pope_files):
    questions = [json.loads(line) for line in pope_files["adversarial"].read_text().splitlines()]
    labels = [q["label"] for q in questions]
    answers = ["Yes, there is." if label == "yes" else "No, there is not." for label in labels]
    scores = pope_scores([parse_answer(a) for a in answers], labels)
    assert scores.accuracy == 1.0 and scores.yes_ratio == 0.5 and len(labels) == 3000


def test_p_yes_pools_the_yes_and_no_tokens():
    from owlens.toyworld.tokenizer import build_tokenizer

    yes, no = yes_no_token_ids(build_tokenizer())
    assert len(yes) == len(no) == 1  # the toy tokenizer lower-cases: "Yes" is "yes"
    logits = torch.zeros(2, 60)
    logits[0, yes[0]], logits[1, no[0]] = 2.0, 3.0
    expected = torch.tensor([torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-3.0))])
    assert torch.allclose(p_yes(logits, yes, no), expected)
    logits = torch.zeros(1, 10)
    logits[0, [1, 2]], logits[0, 3] = 1.0, 1.0  # two yes tokens, one no token, equal logits: P(yes) = 2/3
    assert p_yes(logits, [1, 2], [3]).item() == pytest.approx(2 / 3)
