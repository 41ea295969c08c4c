"""Which objects a free text mentions: canonical class names found through lists of synonyms.

Words are lower-cased and reduced to a singular by one fixed rule set, applied to the text and to the
synonyms alike, so "two dogs" mentions "dog" and "wine glasses" mentions "wine glass". The longest synonym
wins where several start at the same word ("hot dog" before "dog"), as CHAIR does (Rohrbach et al. 2018).
The COCO table below is ours (the 80 instance categories with common synonyms), in CHAIR's spirit but not a
copy of its list, so figures are close to, not identical with, published CHAIR numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["ObjectVocabulary", "coco_vocabulary", "singular"]

_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "knives": "knife", "leaves": "leaf", "teeth": "tooth", "feet": "foot", "geese": "goose",
              "oxen": "ox", "wolves": "wolf", "shelves": "shelf", "scissors": "scissors", "skis": "ski",
              "glasses": "glass", "buses": "bus", "sandwiches": "sandwich", "benches": "bench", "couches": "couch"}


def singular(word: str) -> str:
    """A crude singular ("dogs" → "dog", "benches" → "bench", "berries" → "berry"); the same rule both sides."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return [singular(w) for w in re.findall(r"[a-z]+", text.lower())]


class ObjectVocabulary:
    """``mentions(text)``: the canonical names a text mentions, unique, in order of first mention."""

    def __init__(self, synonyms: Mapping[str, Sequence[str]]):
        self.names = tuple(synonyms)
        self._phrases: dict[tuple[str, ...], str] = {}
        for name, phrases in synonyms.items():
            for phrase in (name, *phrases):
                key = tuple(_words(phrase))
                if key in self._phrases and self._phrases[key] != name:
                    raise ValueError(f"the phrase {phrase!r} names both {self._phrases[key]!r} and {name!r}; "
                                     "expected each synonym to belong to one class")
                self._phrases[key] = name
        self._longest = max(len(key) for key in self._phrases)

    def mentions(self, text: str) -> list[str]:
        words, found, i = _words(text), {}, 0
        while i < len(words):
            for length in range(min(self._longest, len(words) - i), 0, -1):
                name = self._phrases.get(tuple(words[i:i + length]))
                if name is not None:
                    found.setdefault(name, None)
                    i += length
                    break
            else:
                i += 1
        return list(found)


# Class name → synonyms separated by "|" (pycocotools' category names; 80 classes).
_COCO = {
    "person": "man|woman|boy|girl|child|kid|baby|people|guy|lady|player|skier|surfer|skateboarder|snowboarder|"
              "rider|pedestrian|adult|toddler",
    "bicycle": "bike|cycle",
    "car": "automobile|sedan|taxi|suv",
    "motorcycle": "motorbike|motor bike|scooter",
    "airplane": "plane|jet|aircraft|airliner",
    "bus": "school bus|double decker",
    "train": "locomotive|tram|subway",
    "truck": "pickup|lorry",
    "boat": "ship|sailboat|canoe|kayak|yacht",
    "traffic light": "stoplight|traffic signal",
    "fire hydrant": "hydrant",
    "stop sign": "",
    "parking meter": "meter",
    "bench": "",
    "bird": "pigeon|seagull|duck|parrot|gull",
    "cat": "kitten|kitty",
    "dog": "puppy|pup",
    "horse": "pony|foal",
    "sheep": "lamb|ram",
    "cow": "cattle|calf|bull|ox",
    "elephant": "",
    "bear": "grizzly|polar bear",
    "zebra": "",
    "giraffe": "",
    "backpack": "rucksack",
    "umbrella": "parasol",
    "handbag": "purse|bag",
    "tie": "necktie",
    "suitcase": "luggage|suit case",
    "frisbee": "",
    "skis": "ski",
    "snowboard": "",
    "sports ball": "ball|soccer ball|football|baseball|tennis ball|basketball",
    "kite": "",
    "baseball bat": "bat",
    "baseball glove": "glove|mitt",
    "skateboard": "skate board",
    "surfboard": "surf board",
    "tennis racket": "racket|racquet",
    "bottle": "",
    "wine glass": "",
    "cup": "mug",
    "fork": "",
    "knife": "",
    "spoon": "",
    "bowl": "",
    "banana": "",
    "apple": "",
    "sandwich": "burger",
    "orange": "",
    "broccoli": "",
    "carrot": "",
    "hot dog": "",
    "pizza": "",
    "donut": "doughnut",
    "cake": "cupcake",
    "chair": "stool",
    "couch": "sofa",
    "potted plant": "plant|houseplant|flower pot",
    "bed": "",
    "dining table": "table|desk",
    "toilet": "urinal",
    "tv": "television|monitor|screen",
    "laptop": "computer|notebook",
    "mouse": "",
    "remote": "remote control|controller",
    "keyboard": "",
    "cell phone": "phone|cellphone|smartphone",
    "microwave": "",
    "oven": "stove",
    "toaster": "",
    "sink": "",
    "refrigerator": "fridge",
    "book": "novel",
    "clock": "",
    "vase": "",
    "scissors": "",
    "teddy bear": "teddy|stuffed animal",
    "hair drier": "hair dryer|blow dryer",
    "toothbrush": "tooth brush",
}


def coco_vocabulary() -> ObjectVocabulary:
    """COCO's 80 instance categories (as pycocotools names them) with common synonyms."""
    return ObjectVocabulary({name: [p for p in synonyms.split("|") if p] for name, synonyms in _COCO.items()})
