"""CHAIR (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"): objects a caption names that the
image does not hold. Lower is better for both:

    CHAIR_i = hallucinated mentions / all mentions          (over every caption)
    CHAIR_s = captions with ≥ 1 hallucinated mention / captions

A mention is one class named in one caption (naming "dog" twice counts once), found by an
``ObjectVocabulary``. Ground truth: the toy world's scenes (``toy_truth``) or COCO instances
(``coco_truth``, through pycocotools).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from owlens.hallucination.vocabulary import ObjectVocabulary
from owlens.results import FieldsResult

__all__ = ["CaptionMentions", "ChairResult", "chair", "coco_truth", "read_toy_truth", "toy_truth"]


@dataclass(frozen=True)
class CaptionMentions(FieldsResult):
    """The classes one caption mentions, and which of them the image does not hold."""

    mentioned: tuple[str, ...]
    hallucinated: tuple[str, ...]


@dataclass(frozen=True)
class ChairResult:
    """CHAIR_s and CHAIR_i (lower is better) and the counts behind them."""

    chair_s: float
    chair_i: float
    n_captions: int
    n_mentions: int
    n_hallucinated: int
    captions: tuple[CaptionMentions, ...]

    def to_dict(self, *, per_caption: bool = False) -> dict:
        payload = asdict(self)
        if not per_caption:
            payload.pop("captions")
        return payload


def chair(captions: Sequence[str], truths: Sequence[set[str]], vocabulary: ObjectVocabulary) -> ChairResult:
    """CHAIR of ``captions`` against the class names each image holds (``truths[i]`` for caption i)."""
    if len(captions) != len(truths):
        raise ValueError(f"expected one ground-truth set per caption; received {len(captions)} captions and "
                         f"{len(truths)} sets")
    if not captions:
        raise ValueError("no captions to score")
    rows = []
    for text, truth in zip(captions, truths):
        mentioned = vocabulary.mentions(text)
        rows.append(CaptionMentions(tuple(mentioned), tuple(m for m in mentioned if m not in truth)))
    mentions = sum(len(r.mentioned) for r in rows)
    hallucinated = sum(len(r.hallucinated) for r in rows)
    return ChairResult(chair_s=sum(bool(r.hallucinated) for r in rows) / len(rows),
                       chair_i=hallucinated / mentions if mentions else 0.0, n_captions=len(rows),
                       n_mentions=mentions, n_hallucinated=hallucinated, captions=tuple(rows))


def toy_truth(objects: Sequence) -> set[str]:
    """Class names a toy scene holds, for ``toyworld.text.toy_vocabulary``: "red circle" and "circle" for a red
    circle.

    ``objects``: ``ToyObject``s, or the dicts of a toy POPE ``truth.jsonl`` row.
    """
    names = set()
    for obj in objects:
        shape, colour = (obj["shape"], obj["colour"]) if isinstance(obj, dict) else (obj.shape, obj.colour)
        names |= {shape, f"{colour} {shape}"}
    return names


def coco_truth(instances: str | Path) -> dict[str, set[str]]:
    """image file name → COCO category names present, from an instances JSON (e.g. instances_val2014.json)."""
    try:
        from pycocotools.coco import COCO
    except ImportError as err:
        raise ImportError("reading COCO instances needs pycocotools, which is not installed: "
                          "`pip install pycocotools` (only CHAIR against COCO needs it)") from err
    path = Path(instances)
    if not path.is_file():
        raise FileNotFoundError(f"COCO instances file not found: {path}")
    coco = COCO(str(path))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return {image["file_name"]: {names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))}
            for image in coco.loadImgs(coco.getImgIds())}


def read_toy_truth(path: str | Path) -> dict[str, set[str]]:
    """image name → class names, from a toy POPE ``truth.jsonl``."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return {row["image"]: toy_truth(row["objects"]) for row in rows}
