"""POPE's question and answer files: JSON Lines (one object per line), whatever the file extension says.

A question line is ``{"question_id", "image", "text", "label"}`` (POPE, Li et al. 2023); POPE's published
files (COCO random, popular, adversarial) are in that format. An answer line written by the runner carries the
same ``question_id`` and ``image`` plus the answer and the detector's verdict (see ``runner.PopeRow``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from owlens.persist.atomic import atomic_open
from owlens.persist.jsonl import read_jsonl

__all__ = ["PopeQuestion", "read_questions", "write_questions", "read_rows", "pair_answers", "object_of"]

# POPE asks "Is there a {c} in the image?"; the toy world asks "is there a {c} ?" (toyworld/text.py).
_QUESTION = re.compile(r"^\s*is there (?:an? )?(?P<object>.+?)(?:\s+in the (?:image|picture|photo))?\s*\?\s*$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question. ``label`` is "yes" or "no" (None when the file carries no labels)."""

    question_id: int | str
    image: str
    text: str
    label: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def object_of(question: str) -> str:
    """The object class a POPE question asks about: "Is there a dining table in the image?" → "dining table"."""
    match = _QUESTION.match(question)
    if match is None:
        raise ValueError(f'expected a POPE question like "Is there a {{object}} in the image?"; received {question!r}')
    return match.group("object").strip()


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"POPE file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def read_questions(path: str | Path) -> Iterator[PopeQuestion]:
    """Stream the questions of a POPE JSONL file, in file order (nothing is held in memory)."""
    path = Path(path)
    for number, line in _lines(path):
        try:
            row = json.loads(line)
            question = PopeQuestion(row["question_id"], str(row["image"]), str(row["text"]), row.get("label"))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: expected a JSON object with question_id, image, text (and label); "
                             f"received {line.strip()[:120]!r} ({err})") from err
        if question.label not in (None, "yes", "no"):
            raise ValueError(f"{path}:{number}: label must be 'yes' or 'no'; received {question.label!r}")
        yield question


def write_questions(path: str | Path, questions: Iterable[PopeQuestion]) -> int:
    """Write questions as POPE JSONL (atomically); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_open(path) as handle:
        for question in questions:
            handle.write(json.dumps(question.to_dict()) + "\n")
            count += 1
    return count


def read_rows(path: str | Path) -> list[dict]:
    """The complete JSON lines of an answers file; a torn last line (a run killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"POPE file not found: {path}")
    # kept when it parses: answers written by another model's script may lack the final newline
    return read_jsonl(path, keep_unterminated=True)[0]


def pair_answers(rows: list[dict], questions: list[PopeQuestion]) -> tuple[list[dict], list[PopeQuestion]]:
    """Each answer row with the question it answers: by ``question_id`` when every row has one (repeats and
    unknown ids refused), else line by line (the counts must match)."""
    if rows and all("question_id" in row for row in rows):
        by_id = {q.question_id: q for q in questions}
        unknown = [row["question_id"] for row in rows if row["question_id"] not in by_id]
        if unknown:
            raise ValueError(f"{len(unknown)} answers have question ids the question file does not hold "
                             f"(first: {unknown[0]!r}); expected the questions these answers were made from")
        unique = {row["question_id"]: row for row in rows}
        if len(unique) != len(rows):
            raise ValueError(f"{len(rows) - len(unique)} answers repeat a question id; expected one answer each")
        return list(unique.values()), [by_id[i] for i in unique]
    if len(rows) != len(questions):
        raise ValueError(f"answers without question ids are paired line by line, so expected {len(questions)} "
                         f"answers (one per question); received {len(rows)}")
    return rows, questions
