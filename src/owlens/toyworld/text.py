"""The toy world's language: prompts, questions, captions and OWL queries (word level, lower case).

Punctuation is a separate word (" ?", " ,", " .") so that every string here tokenises word by word and
decodes back to itself with the word-level tokenizer of ``tokenizer.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from owlens.hallucination.vocabulary import ObjectVocabulary
from owlens.toyworld.defects import TRAITS
from owlens.toyworld.world import COLOURS, SHAPES

if TYPE_CHECKING:
    from owlens.toyworld.world import Scene

__all__ = [
    "CAPTION_QUESTION",
    "IMAGE_TOKEN",
    "PROMPT_TEMPLATE",
    "caption",
    "expand_image_tokens",
    "owl_query",
    "parse_caption",
    "presence_question",
    "toy_vocabulary",
    "trait_question",
]

IMAGE_TOKEN = "<image>"
PROMPT_TEMPLATE = "<s> USER: <image>\n{question} ASSISTANT:"
CAPTION_QUESTION = "what is in the image ?"


def _check(colour: str | None, shape: str) -> None:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if colour is not None and colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS} or None")


def _noun_phrase(colour: str | None, shape: str) -> str:
    _check(colour, shape)
    return shape if colour is None else f"{colour} {shape}"


def expand_image_tokens(prompt: str, n: int = 64) -> str:
    """Replace the single ``<image>`` by n adjacent ``<image>`` tokens, as LLaVA's processor does."""
    count = prompt.count(IMAGE_TOKEN)
    if count != 1:
        raise ValueError(f"expected exactly one {IMAGE_TOKEN} in the prompt, received {count}")
    return prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * n)


def presence_question(colour: str | None, shape: str) -> str:
    """POPE-style question: "is there a red circle ?" or "is there a circle ?"."""
    return f"is there a {_noun_phrase(colour, shape)} ?"


def trait_question(trait: str) -> str:
    """Numeric question, "from one to ten , how heavy is the shape ?" (answer "1".."10")."""
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}; expected one of {TRAITS}")
    return f"from one to ten , how {trait} is the shape ?"


def owl_query(colour: str | None, shape: str) -> str:
    """OWL text query, "a photo of a red circle" (the CLIP prompt OWL-ViT was trained with)."""
    return f"a photo of a {_noun_phrase(colour, shape)}"


def caption(scene: Scene) -> str:
    """"a large red circle , a small green cross and a small blue star ." (objects in scene order)."""
    phrases = [f"a {o.size} {o.colour} {o.shape}" for o in scene.objects]
    if not phrases:
        raise ValueError("cannot caption a scene without objects")
    if len(phrases) == 1:
        return f"{phrases[0]} ."
    return f"{' , '.join(phrases[:-1])} and {phrases[-1]} ."


def parse_caption(text: str) -> set[tuple[str, str]]:
    """(colour, shape) pairs a caption mentions; a shape without a colour in its phrase is ignored.

    A phrase ends at "and", "," or "."; the colour is the last colour word before the shape within it.
    """
    pairs: set[tuple[str, str]] = set()
    colour: str | None = None
    for word in text.lower().replace(",", " , ").replace(".", " . ").split():
        if word in ("and", ",", "."):
            colour = None
        elif word in COLOURS:
            colour = word
        elif word in SHAPES:
            if colour is not None:
                pairs.add((colour, word))
            colour = None
    return pairs


def toy_vocabulary() -> ObjectVocabulary:
    """The object classes a toy answer can name, for CHAIR and ``check``: "red circle" (colour and shape) and
    bare shapes ("circle")."""
    synonyms: dict[str, list[str]] = {shape: [] for shape in SHAPES}
    synonyms.update({f"{colour} {shape}": [] for colour in COLOURS for shape in SHAPES})
    return ObjectVocabulary(synonyms)
