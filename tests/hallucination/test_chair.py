"""Object mentions through synonyms, CHAIR by hand, and the truth it is measured against."""

import pytest

from owlens.hallucination.chair import chair, coco_truth, toy_truth
from owlens.hallucination.vocabulary import ObjectVocabulary, coco_vocabulary, singular
from owlens.toyworld.text import toy_vocabulary


@pytest.mark.parametrize("text, expected", [
    ("Two dogs and a man on a bench.", ["dog", "person", "bench"]),
    ("A hot dog next to a dog.", ["hot dog", "dog"]),
    ("People holding wine glasses near the dining table", ["person", "wine glass", "dining table"]),
    ("A teddy bear and a polar bear", ["teddy bear", "bear"]),
    ("A kitten on the sofa watching TV", ["cat", "couch", "tv"]),
    ("children with skis and a cell phone", ["person", "skis", "cell phone"]),
    ("A bus and two buses", ["bus"]),
    ("nothing here", []),
])
def test_coco_mentions(text, expected):
    assert coco_vocabulary().mentions(text) == expected


def test_coco_vocabulary_has_the_80_classes():
    assert len(coco_vocabulary().names) == 80


@pytest.mark.parametrize("word, expected", [("dogs", "dog"), ("benches", "bench"), ("berries", "berry"),
                                            ("glass", "glass"), ("bus", "bus"), ("people", "person")])
def test_singular(word, expected):
    assert singular(word) == expected


def test_toy_mentions_colour_and_shape():
    vocabulary = toy_vocabulary()
    assert vocabulary.mentions("a large red circle , a small blue star and a cross .") == ["red circle", "blue star",
                                                                                           "cross"]


def test_a_synonym_in_two_classes_is_refused():
    with pytest.raises(ValueError, match="names both"):
        ObjectVocabulary({"cat": ["pet"], "dog": ["pet"]})


def test_chair_by_hand():
    truth = [toy_truth([{"shape": "circle", "colour": "red"}]), toy_truth([{"shape": "star", "colour": "blue"}])]
    assert truth[0] == {"circle", "red circle"}
    captions = ["a red circle and a green star .", "a blue star ."]
    result = chair(captions, truth, toy_vocabulary())
    # mentions: {red circle, green star} + {blue star}; hallucinated: green star
    assert (result.n_mentions, result.n_hallucinated) == (3, 1)
    assert result.chair_i == pytest.approx(1 / 3) and result.chair_s == pytest.approx(1 / 2)
    assert result.captions[0].hallucinated == ("green star",)
    assert "captions" not in result.to_dict() and len(result.to_dict(per_caption=True)["captions"]) == 2
    with pytest.raises(ValueError, match="one ground-truth set per caption"):
        chair(captions, truth[:1], toy_vocabulary())


def test_coco_truth_needs_pycocotools_and_says_so(tmp_path):
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pycocotools"):
            coco_truth(tmp_path / "instances.json")
        return
    import json

    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 18, "name": "dog"}]}))
    assert coco_truth(tmp_path / "instances.json") == {"a.jpg": {"dog"}}
