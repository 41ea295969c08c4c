"""The POPE runner: every question answered by the MLLM and checked by the detector from the same E.

Per question: the generated answer, its yes/no as POPE's reference reads it, P(yes) from the
logits at the answer's first position, OWL's presence score p_c = sigmoid(max over boxes of the logit for
"a photo of a {c}") with its best box, and the flag (``flag.py``). Rows are appended to a JSONL file as they
are computed (``journal.py``), so a rerun resumes where a run stopped; questions are streamed and batched, so
memory holds one batch of embeddings whatever the file's length. A missing or unreadable image, or one whose
path leaves the images folder, is reported once and its questions are skipped (a rerun retries them).

``calibrate_on_questions`` answers a labelled calibration split this way and fits the model's calibration on it
(``calibration.py``, which stays free of torch so that scoring answer files never loads it).

Sharding: ``shard=(index, count)`` answers every ``count``-th question from ``index`` into its own part file
``OUT.part-{index}``; ``merge_parts`` then writes them into OUT in question order. Under
``accelerate launch`` each process takes one shard (``owlens pope run`` does this).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from owlens.boxes import cxcywh_to_xyxy
from owlens.hallucination.answers import p_yes, parse_answer, yes_no_token_ids
from owlens.hallucination.calibration import Calibration, fit_calibration, weights_digest
from owlens.hallucination.flag import PresenceThreshold, flag_scores, flags
from owlens.hallucination.journal import Journal
from owlens.hallucination.pope_format import (
    PopeQuestion,
    object_of,
    pair_answers,
    read_questions,
    read_rows,
)
from owlens.images import ImageReadError, load_image
from owlens.persist import OutsideFolderError, atomic_open, confined, read_jsonl
from owlens.persist.fingerprint import Fingerprint, claim, file_digest, forget_inputs, image_listing, model_weights
from owlens.persist.lock import lock_beside
from owlens.queries import QUERY_TEMPLATE
from owlens.results import FieldsResult

__all__ = ["PopeRunConfig", "PopeRow", "PopeRunResult", "calibrate_on_questions", "fingerprint_path", "run_pope",
           "merge_parts", "part_paths"]


@dataclass(frozen=True)
class PopeRunConfig:
    batch_size: int = 16  # questions per forward pass; images shared by questions are encoded once
    max_new_tokens: int = 16  # POPE answers are a word or a sentence; the parse keeps the first sentence
    # Appended to each question, e.g. LLaVA-1.5's POPE prompt "\nAnswer the question using a single word or phrase."
    prompt_suffix: str = ""
    threshold: float = 0.5  # τ on p_c for the stored flag; calibrate it with `owlens pope score --calibrate`
    query_template: str = QUERY_TEMPLATE  # OWL query for object c
    fsync: bool = False  # also fsync every row (survives a power cut, not only a kill)


@dataclass(frozen=True)
class PopeRow(FieldsResult):
    """One answered question, as written to the answers file.

    answer: the generated text; parsed: "yes"/"no" (``answers.parse_answer``); p_yes: P(yes) within the
    yes/no first tokens; presence: p_c = sigmoid(presence_logit), presence_logit = max over boxes of OWL's
    logit for ``query``; box_xyxy_px: that best box in pixels of the original image; flag / flag_score: see
    ``flag.py``, at ``threshold`` (a probability on p_c); label: copied from the question file when present.
    """

    question_id: int | str
    image: str
    question: str
    answer: str
    parsed: str
    p_yes: float
    object: str
    query: str
    presence: float
    presence_logit: float
    box_xyxy_px: tuple[float, float, float, float]
    flag: bool
    flag_score: float
    threshold: float
    label: str | None


@dataclass(frozen=True)
class PopeRunResult:
    """What a run did: rows written now, rows found from earlier runs, questions skipped for their image."""

    out: Path
    answered: int
    resumed: int
    skipped: int
    missing_images: tuple[str, ...]
    shard: tuple[int, int]

    def to_dict(self) -> dict:
        return {**asdict(self), "out": str(self.out)}


def part_paths(out: str | Path) -> list[Path]:
    """The part files that sharded runs into ``out`` have left beside it."""
    out = Path(out)
    prefix = out.name + ".part-"
    # Only OUT.part-INDEX: each part's lock file sits beside it (OUT.part-INDEX.lock).
    return sorted(p for p in out.parent.glob(prefix + "*") if p.name[len(prefix):].isdigit())


def fingerprint_path(out: str | Path) -> Path:
    """What produced the rows of ``out``: ``OUT.fingerprint.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".fingerprint.json")


def _fingerprint(model, questions: Path, images: Path, names: dict, config: PopeRunConfig) -> Fingerprint:
    """Weights, the question file and the images it names (``names``), and the settings that change a row.

    ``batch_size`` and ``fsync`` are left out: they change how fast rows come, not what they hold, so a resume
    may use another batch size (e.g. after running out of memory).
    """
    inside = {}
    for name in names:
        try:
            inside[name] = confined(images, name, what="image")
        except OutsideFolderError:
            continue  # never opened, never answered: nothing to vouch for
    listing = {name: entry for name, entry in zip(inside, image_listing(inside.values()).values())}
    settings = {k: v for k, v in asdict(config).items() if k not in ("batch_size", "fsync")}
    return Fingerprint(weights=model_weights(model),
                       inputs={"questions": {"path": str(questions.resolve()), "sha256": file_digest(questions)},
                               "images": listing},
                       settings={**settings, "dtype": str(next(model.parameters()).dtype)})


def _in_order(out: Path, questions: Path) -> bool:
    """Whether the rows of ``out`` follow the question file's order (a retried image's rows come last)."""
    position = {q.question_id: i for i, q in enumerate(read_questions(questions))}
    ranks = [position.get(row["question_id"], len(position)) for row in read_jsonl(out)[0]]
    return all(a <= b for a, b in itertools.pairwise(ranks))


def _target(out: Path, shard: tuple[int, int]) -> Path:
    return out if shard[1] == 1 else out.with_name(f"{out.name}.part-{shard[0]}")


def _done(out: Path) -> dict:
    """question_id → (image, question) of every row already written to ``out`` or its part files."""
    return {row["question_id"]: (row["image"], row["question"])
            for path in [out, *part_paths(out)] for row in read_jsonl(path)[0]}


def _pending(questions: Path, shard: tuple[int, int], done: dict, out: Path,
             named: dict | None = None) -> Iterator[PopeQuestion]:
    """The questions of this shard not yet answered; ``named`` collects every question's image on the way."""
    seen: set = set()
    for index, question in enumerate(read_questions(questions)):
        key = question.question_id
        if named is not None:
            named.setdefault(question.image)
        if key in seen:  # resuming and merging key on the id: it must be unique
            raise ValueError(f"{questions}: question_id {key!r} appears twice; expected unique ids")
        seen.add(key)
        if key in done and done[key] != (question.image, question.text):
            raise ValueError(f"{out} holds an answer to another question with id {key!r} ({done[key]}; now "
                             f"{(question.image, question.text)}): pass another --out, or move that file away")
        if index % shard[1] == shard[0] and key not in done:
            yield question


class _Images:
    """Loads a batch's images; reports each missing/unreadable one once.

    A question file may come from anywhere: an image path that leaves the images folder (absolute, ``..``, a
    link out) is reported like an unreadable image and never opened.
    """

    def __init__(self, folder: Path, log):
        self.folder, self.log, self.missing = folder, log, []

    def load(self, names: Iterable[str]) -> dict:
        loaded = {}
        for name in dict.fromkeys(names):
            try:
                loaded[name] = load_image(confined(self.folder, name, what="image"))
            except (ImageReadError, OutsideFolderError) as err:
                if name not in self.missing:
                    self.missing.append(name)
                    self.log(f"skipping the questions on {name}: {err}")
        return loaded


def _best_boxes(detections, rows: torch.Tensor, columns: torch.Tensor, sizes) -> tuple[torch.Tensor, list]:
    """Each question's max logit over boxes (B,) and that box in pixels, from ``Detections`` over unique images."""
    logits = detections.logits.float()[rows, :, columns]  # (B, N): image rows[b], query columns[b]
    best_logit, best = logits.max(dim=-1)
    chosen = detections.boxes_cxcywh.float()[rows, best]  # (B, 4)
    boxes = [tuple(float(v) for v in cxcywh_to_xyxy(box, size)) for box, size in zip(chosen, sizes)]
    return best_logit, boxes


@torch.no_grad()
def _answer(model, batch: list[PopeQuestion], images: dict, config: PopeRunConfig, token_ids, threshold):
    names = list(images)
    image_rows = torch.tensor([names.index(q.image) for q in batch])
    unique_embedding = model.encode_images([images[n] for n in names])  # (U, 1+N, d)
    # W once per image, then one row per question; P(yes) from generate's own first step, not a second forward.
    tokens = model.image_tokens(unique_embedding)[image_rows.to(unique_embedding.device)]  # (B, N, D_lm)
    prompts = [model.processor.chat(q.text + config.prompt_suffix) for q in batch]
    generated = model.generate_from_tokens(tokens, prompts, max_new_tokens=config.max_new_tokens, first_logits=True)
    chance_yes = p_yes(generated.first_logits, *token_ids).cpu()  # (B,)
    texts = generated.texts
    objects = [object_of(q.text) for q in batch]
    queries = list(dict.fromkeys(config.query_template.format(o) for o in objects))
    detections = model.detect(unique_embedding, queries)  # logits (U, N, Q)
    columns = torch.tensor([queries.index(config.query_template.format(o)) for o in objects])
    sizes = [images[q.image].size for q in batch]
    logit, boxes = _best_boxes(detections, image_rows.to(detections.logits.device),
                               columns.to(detections.logits.device), sizes)
    logit = logit.cpu().double().numpy()
    parsed = [parse_answer(t) for t in texts]
    said_yes = [p == "yes" for p in parsed]
    flagged, scores = flags(said_yes, logit, threshold), flag_scores(said_yes, logit, threshold)
    return [PopeRow(q.question_id, q.image, q.text, texts[b], parsed[b], float(chance_yes[b]), objects[b],
                    config.query_template.format(objects[b]), float(torch.sigmoid(torch.tensor(logit[b]))),
                    float(logit[b]), boxes[b], bool(flagged[b]), float(scores[b]), config.threshold, q.label)
            for b, q in enumerate(batch)]


def run_pope(model, questions: str | Path, images: str | Path, out: str | Path,
             config: PopeRunConfig = PopeRunConfig(), *, shard: tuple[int, int] = (0, 1), progress: bool = True,
             log=print) -> PopeRunResult:
    """Answer the POPE questions of ``questions`` (JSONL) on the images of folder ``images`` into ``out``.

    Rows already in ``out`` (or its part files) are kept and not recomputed, once ``out``'s fingerprint shows
    that the same weights, questions, images and settings produced them. One run at a time writes ``out``
    (each shard its own part file): another is refused while it runs.
    """
    questions, out, images = Path(questions).resolve(), Path(out).resolve(), Path(images).resolve()
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"expected a shard (index, count) with 0 <= index < count; received {shard}")
    if not images.is_dir():
        raise FileNotFoundError(f"images folder not found: {images}")
    if out.is_dir():
        raise ValueError(f"--out: expected an answers file (JSON Lines); received the folder {out}")
    with ExitStack() as locks:
        locks.enter_context(lock_beside(_target(out, shard)))
        if shard[1] > 1 and shard[0] == 0:  # the main shard also holds OUT itself: it merges into it
            locks.enter_context(lock_beside(out))
        done = _done(out)
        # The question file is checked against the rows first: its message says which question differs.
        named: dict = {}
        total = sum(1 for _ in _pending(questions, shard, done, out, named))
        claim(fingerprint_path(out), _fingerprint(model, questions, images, named, config))
        result = _run_locked(model, questions, images, out, config, shard, (done, total), progress, log)
        if shard[1] == 1 and result.answered and not _in_order(out, questions):
            merge_parts(out, questions)  # rows of a retried image go back to their questions' places
        return result


def _run_locked(model, questions: Path, images: Path, out: Path, config: PopeRunConfig, shard: tuple[int, int],
                pending: tuple[dict, int], progress: bool, log) -> PopeRunResult:
    from tqdm.auto import tqdm

    threshold = PresenceThreshold.from_probability(config.threshold)
    token_ids = yes_no_token_ids(model.processor.mllm_tokenizer)
    done, total = pending
    loader, answered, skipped = _Images(images, log), 0, 0
    bar = tqdm(total=total, disable=not progress, desc=f"POPE {questions.stem}", unit="question")
    with bar, Journal(_target(out, shard), fsync=config.fsync) as journal:
        pending = _pending(questions, shard, done, out)
        while batch := list(itertools.islice(pending, config.batch_size)):
            known = len(loader.missing)
            loaded = loader.load(q.image for q in batch)
            if len(loader.missing) > known:  # unreadable now, perhaps repaired before the rerun that retries it
                forget_inputs(fingerprint_path(out), "images", loader.missing[known:])
            ready = [q for q in batch if q.image in loaded]
            if ready:
                for row in _answer(model, ready, loaded, config, token_ids, threshold):
                    journal.append(row.to_dict())
            answered, skipped = answered + len(ready), skipped + len(batch) - len(ready)
            bar.update(len(batch))
    return PopeRunResult(out, answered, len(done), skipped, tuple(loader.missing), shard)


def merge_parts(out: str | Path, questions: str | Path) -> int:
    """Fold ``out`` and its part files into ``out``, one row per question id, in question order; returns rows."""
    out = Path(out)
    parts = part_paths(out)
    rows: dict = {}
    for path in [out, *parts]:
        for row in read_jsonl(path)[0]:
            rows.setdefault(row["question_id"], row)
    ordered = [rows.pop(q.question_id) for q in read_questions(questions) if q.question_id in rows]
    ordered += list(rows.values())  # ids the question file no longer holds: kept, at the end
    with atomic_open(out) as handle:  # a merge killed half-way leaves ``out`` and the parts as they were
        for row in ordered:
            handle.write(json.dumps(row) + "\n")
    for path in parts:
        path.unlink()
    return len(ordered)


def calibrate_on_questions(model, questions: str | Path, images: str | Path, answers: str | Path, *,
                           batch_size: int = 16, max_new_tokens: int = 16, prompt_suffix: str = "",
                           source: dict | None = None, progress: bool = False, log=print) -> Calibration:
    """Answer a labelled calibration split through J (``run_pope``, resumable into ``answers``) and fit on it."""
    config = PopeRunConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, prompt_suffix=prompt_suffix)
    run_pope(model, questions, images, answers, config, progress=progress, log=log)
    rows, asked = pair_answers(read_rows(answers), list(read_questions(questions)))
    if any(q.label is None for q in asked):
        raise ValueError(f"{questions}: expected a 'label' (yes/no) on every calibration question")
    folder = getattr(model, "projector_folder", None)
    return fit_calibration(rows, [q.label for q in asked], weights_sha256=weights_digest(folder) if folder else None,
                           suffix=prompt_suffix,
                           source={"questions": str(questions), "n_questions": len(rows), **(source or {})})
