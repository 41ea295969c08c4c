"""POPE files for the toy world, built from its truth in POPE's own format (Li et al. 2023, §3).

The object classes are the toy world's shapes; the question is the one the toy LLaVA was trained on,
``text.presence_question(None, shape)`` ("is there a star ?"). Images are held-out scenes
(``sample_scene(prior=False)``: shapes independent) written as PNG. As in POPE, the three splits share the
images and the positive questions (up to ``per_image`` present shapes) and differ in the negatives, as many
as the positives:

- random: absent shapes drawn uniformly;
- popular: the absent shapes most frequent in the training distribution;
- adversarial: the absent shapes that co-occur most, in the training distribution, with the present ones.

Frequencies and co-occurrences are counted on ``prior=True`` scenes (what the model was trained on), so the
injected prior (``defects.COOCCUR_CUE`` "cross" → ``COOCCUR_PARTNER`` "star") makes "is there a star ?" the
first adversarial negative of every scene that holds a cross and no star: the hallucination to be caught.
A ``calibration`` file (random negatives, other images from another seed stream) is where the flag's
threshold is chosen; ``calibrate_toy`` fits the shipped model's τ on it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from owlens.hallucination.calibration import Calibration
from owlens.hallucination.pope_format import PopeQuestion, write_questions
from owlens.hallucination.runner import calibrate_on_questions
from owlens.persist.atomic import atomic_write_bytes
from owlens.toyworld.text import presence_question
from owlens.toyworld.world import SHAPES, sample_scene

__all__ = ["SPLITS", "TOY_CALIBRATION_IMAGES", "TOY_CALIBRATION_SEED", "ToyPope", "build_toy_pope", "calibrate_toy",
           "training_statistics"]

SPLITS = ("random", "popular", "adversarial")
_STREAM = 5_555_555  # first seed word of these generators; the trainers' and evaluate.py's never start so

# The toy world's calibration scenes: seed 1000 of the toy POPE generators, whose calibration stream no
# reported evaluation seed (0, 1, 2, ...) reads, so the shipped τ is never fitted on scenes it is judged on.
TOY_CALIBRATION_SEED = 1000
TOY_CALIBRATION_IMAGES = 400


@dataclass(frozen=True)
class ToyPope:
    """Where the files are: ``questions[split]`` (JSONL) for SPLITS and "calibration", images under ``images``,
    and ``truth`` (JSONL: image, objects with shape, colour, size, box_xyxy) for CHAIR."""

    folder: Path
    images: Path
    questions: dict[str, Path]
    truth: Path
    seed: int

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "images": str(self.images), "truth": str(self.truth), "seed": self.seed,
                "questions": {k: str(v) for k, v in self.questions.items()}}


def training_statistics(seed: int = 0, n_scenes: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Shape frequency (S,) and co-occurrence (S, S) (share of scenes holding both) under the training prior."""
    rng = np.random.default_rng([_STREAM, seed, 0])
    present = np.zeros((n_scenes, len(SHAPES)))
    for i in range(n_scenes):
        for obj in sample_scene(rng, prior=True).objects:
            present[i, SHAPES.index(obj.shape)] = 1.0
    return present.mean(0), present.T @ present / n_scenes


def _negatives(split: str, present: list[int], absent: list[int], k: int, rng, frequency, cooccurrence) -> list[int]:
    if split == "random":
        return [int(i) for i in rng.choice(absent, size=k, replace=False)]
    # Ties broken by the shapes' fixed order (stable sort), so the files depend on the seed only.
    weight = frequency[absent] if split == "popular" else cooccurrence[np.ix_(present, absent)].sum(0)
    order = np.argsort(-weight, kind="stable")
    return [absent[i] for i in order[:k]]


def _scene_questions(scene, rng, splits, per_image, statistics) -> dict[str, list[tuple[str, str]]]:
    present = list(dict.fromkeys(SHAPES.index(o.shape) for o in scene.objects))
    absent = [i for i in range(len(SHAPES)) if i not in present]
    k = min(per_image, len(present), len(absent))
    positives = [int(i) for i in rng.choice(present, size=k, replace=False)]
    out = {}
    for split in splits:
        negatives = _negatives(split, present, absent, k, rng, *statistics)
        out[split] = [(SHAPES[i], label) for p, n in zip(positives, negatives) for i, label in ((p, "yes"), (n, "no"))]
    return out


def _keep_or_write(path: Path, scene) -> None:
    """Save the scene's PNG unless ``path`` already holds those bytes. A rerun into the same folder must resume: the
    POPE runner's fingerprint lists the images with their mtimes, so rewriting identical files would refuse it."""
    buffer = io.BytesIO()
    scene.pil().save(buffer, format="PNG")
    data = buffer.getvalue()
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        atomic_write_bytes(path, data)


def _write_split(folder: Path, name: str, scenes, stem: str, rng, splits, per_image, statistics, truth_rows):
    questions: dict[str, list[PopeQuestion]] = {split: [] for split in splits}
    for index, scene in enumerate(scenes):
        image = f"{stem}_{index:05d}.png"
        _keep_or_write(folder / "images" / image, scene)
        objects = [{"shape": o.shape, "colour": o.colour, "size": o.size, "box_xyxy": list(o.box_xyxy)}
                   for o in scene.objects]
        truth_rows.append({"image": image, "objects": objects})
        for split, pairs in _scene_questions(scene, rng, splits, per_image, statistics).items():
            for shape, label in pairs:
                questions[split].append(PopeQuestion(len(questions[split]) + 1, image, presence_question(None, shape),
                                                     label))
    return {split: write_questions(folder / f"toy_pope_{split if name == 'test' else name}.json", qs)
            for split, qs in questions.items()}


def build_toy_pope(folder: str | Path, *, seed: int = 0, n_images: int = 500, calibration_images: int = 200,
                   per_image: int = 3, statistics_scenes: int = 2000) -> ToyPope:
    """Write toy_pope_{random,popular,adversarial,calibration}.json, images/ and truth.jsonl into ``folder``."""
    # n_images = 0 writes the calibration split alone (what `owlens calibrate` fits a model's τ on).
    if n_images < 0 or calibration_images < 1 or per_image < 1:
        raise ValueError(f"expected no negative image count, at least one calibration image and question per "
                         f"image; received "
                         f"{n_images}, {calibration_images}, {per_image}")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    statistics = training_statistics(seed, statistics_scenes)
    truth_rows: list[dict] = []
    for name, count, stream, splits in (("test", n_images, 1, SPLITS), ("calibration", calibration_images, 2,
                                                                        ("random",))):
        rng = np.random.default_rng([_STREAM, seed, stream])
        scenes = (sample_scene(rng, prior=False) for _ in range(count))
        _write_split(folder, name, scenes, f"toy{seed}_{name}", rng, splits, per_image, statistics, truth_rows)
    truth = folder / "truth.jsonl"
    truth.write_text("".join(json.dumps(row) + "\n" for row in truth_rows))
    questions = {split: folder / f"toy_pope_{split}.json" for split in (*SPLITS, "calibration")}
    return ToyPope(folder, folder / "images", questions, truth, seed)


def calibrate_toy(model, folder: str | Path, *, seed: int = TOY_CALIBRATION_SEED,
                  n_images: int = TOY_CALIBRATION_IMAGES, batch_size: int = 64, progress: bool = False,
                  log=print) -> Calibration:
    """The toy world's calibration: its calibration split for ``seed`` (``n_images`` scenes) built in
    ``folder``, answered through J, τ and the combined flag fitted on it. Same seed, same file."""
    files = build_toy_pope(folder, seed=seed, n_images=0, calibration_images=n_images)
    source = {"command": f"owlens calibrate --toy-seed {seed} --toy-images {n_images}", "toy_seed": seed,
              "toy_images": n_images, "questions": "the toy world's calibration split"}
    return calibrate_on_questions(model, files.questions["calibration"], files.images,
                                  Path(folder) / "answers_calibration.jsonl", batch_size=batch_size, max_new_tokens=4,
                                  source=source, progress=progress, log=log)
