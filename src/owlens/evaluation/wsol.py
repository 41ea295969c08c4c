"""The paper's WSOL check on any folder of images with boxes (CUB-style): MaxBoxAcc, MaxBoxAccV2, pointing game.

The paper explains the token "bird" after "... ASSISTANT: The image shows a" on CUB-200-2011 and scores the
maps with the WSOL protocol (Choe et al., CVPR 2020). As there, maps are resized to ``resolution`` x
``resolution`` (224, the protocol's) with the boxes scaled alike; the pointing game uses the boxes with Zhang et
al.'s 15 px tolerance at that resolution. Folders, either layout:
- ``localization.txt`` (wsolevaluation's metadata): one line ``relative/path,x0,y0,x1,y1`` per box, pixels;
- CUB-200-2011 as distributed: ``images.txt`` (``id relative/path`` under ``images/``), ``bounding_boxes.txt``
  (``id x y width height``) and, when present, ``train_test_split.txt`` (only the test images, flag 0, are used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from owlens.evaluation._journal import CaseJournal
from owlens.evaluation.maxboxacc import MaxBoxAcc, MaxBoxAccV2, box_iou_curves
from owlens.evaluation.pointing_game import PointingGame
from owlens.explain.inputs import ExplainInputs
from owlens.explain.registry import METHODS, make_explainer
from owlens.images import load_image

__all__ = ["read_wsol_folder", "run_wsol", "WsolResult", "WsolScores", "PAPER_QUESTION", "PAPER_ANSWER_PREFIX",
           "PAPER_TOKEN"]

PAPER_QUESTION = "What's the content of the image?"
PAPER_ANSWER_PREFIX = "The image shows a"
PAPER_TOKEN = "bird"
POINTING_TOLERANCE_PX = 15  # Zhang et al., at the protocol's 224 px
RECORDS = "wsol-images.jsonl"


@dataclass(frozen=True)
class WsolScores:
    """One method over the folder, higher is better. maxboxacc: MaxBoxAcc (largest component, IoU ≥ 0.5);
    maxboxacc_v2: MaxBoxAccV2 (best component, IoU 0.3/0.5/0.7); pointing_game: share of maps whose maximum
    falls within the tolerance of a box."""

    maxboxacc: float
    maxboxacc_v2: float
    pointing_game: float


@dataclass(frozen=True)
class WsolResult:
    """``run_wsol``'s result. methods: ``WsolScores`` by method name, None when no image was scored; images:
    how many were; token, prompt: what was explained and the prompt that led to it; resolution: the side the
    maps and boxes were resized to."""

    methods: dict[str, WsolScores | None]
    images: int
    token: str
    prompt: str
    resolution: int

    def to_json(self) -> dict:
        return {"methods": {name: asdict(s) if s is not None else {} for name, s in self.methods.items()},
                "images": self.images, "token": self.token, "prompt": self.prompt, "resolution": self.resolution}


def read_wsol_folder(folder: str | Path) -> list[tuple[Path, np.ndarray]]:
    """A WSOL folder → [(image path, boxes (G, 4) x0, y0, x1, y1 in the image's pixels)], in file order."""
    folder = Path(folder)
    if (folder / "localization.txt").is_file():
        boxes: dict[str, list] = {}
        for number, line in enumerate((folder / "localization.txt").read_text().splitlines(), start=1):
            if line.strip():
                fields = line.strip().split(",")
                if len(fields) != 5:
                    raise ValueError(f"{folder / 'localization.txt'}:{number}: expected 'path,x0,y0,x1,y1'; "
                                     f"received {line!r}")
                boxes.setdefault(fields[0], []).append([float(v) for v in fields[1:]])
        items = [(folder / path, np.array(b, dtype=np.float64)) for path, b in boxes.items()]
    elif (folder / "images.txt").is_file() and (folder / "bounding_boxes.txt").is_file():
        items = _cub(folder)
    else:
        raise FileNotFoundError(f"{folder} is not a WSOL folder: expected localization.txt (lines 'path,x0,y0,x1,y1') "
                                "or CUB-200-2011's images.txt and bounding_boxes.txt")
    missing = [str(path) for path, _ in items if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images named in {folder} are not there, e.g. {missing[0]}")
    return items


def _table(path: Path) -> dict[str, list[str]]:
    return {fields[0]: fields[1:] for fields in (line.split() for line in path.read_text().splitlines()) if fields}


def _cub(folder: Path) -> list[tuple[Path, np.ndarray]]:
    paths, boxes = _table(folder / "images.txt"), _table(folder / "bounding_boxes.txt")
    split = _table(folder / "train_test_split.txt") if (folder / "train_test_split.txt").is_file() else {}
    items = []
    for key, (path,) in paths.items():
        if split.get(key, ["0"])[0] != "0":
            continue  # a training image
        x, y, w, h = (float(v) for v in boxes[key])
        items.append((folder / "images" / path, np.array([[x, y, x + w, y + h]])))
    return items


def _resize(saliency_map: torch.Tensor, boxes: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    height, width = saliency_map.shape
    resized = F.interpolate(saliency_map[None, None].double(), size=(resolution, resolution), mode="bilinear",
                            align_corners=False)[0, 0].numpy()
    return resized, boxes * np.array([resolution / width, resolution / height] * 2)


def run_wsol(model, folder: str | Path, *, methods: Sequence[str] | None = None, token: str = PAPER_TOKEN,
             question: str = PAPER_QUESTION, answer_prefix: str = PAPER_ANSWER_PREFIX, resolution: int = 224,
             limit: int | None = None, out_dir: str | Path | None = None, progress: bool = True) -> WsolResult:
    """Every method on every image → ``WsolResult``; with ``out_dir`` the per-image rows resume a killed run."""
    from tqdm.auto import tqdm

    methods = list(methods or METHODS)
    items = read_wsol_folder(folder)[:limit]
    prompt = " ".join(part for part in (model.processor.chat(question), answer_prefix) if part)
    config = {"folder": str(Path(folder).resolve()), "methods": methods, "token": token, "prompt": prompt,
              "resolution": resolution, "images": len(items)}
    with CaseJournal(out_dir, RECORDS, config) as journal:
        for index, (path, boxes) in enumerate(tqdm(items, disable=not progress, desc="wsol", unit="image")):
            if ("wsol", index) in journal.done:
                continue
            inputs = ExplainInputs.from_images(model, load_image(path), prompt)
            row = {}
            for name in methods:  # the random map seeded per image: a resumed run draws the same maps
                explainer = make_explainer(name, model, **({"seed": index} if name == "random" else {}))
                resized, scaled = _resize(explainer.explain(inputs, token).map, boxes, resolution)
                largest, best = box_iou_curves(resized, scaled)
                row[name] = {"iou_largest": np.round(largest, 5).tolist(), "iou_best": np.round(best, 5).tolist(),
                             "pointing_game": PointingGame(POINTING_TOLERANCE_PX)(resized, scaled)}
            journal.append({"kind": "wsol", "index": index, "path": str(path), "methods": row})
        rows = journal.rows
    table = {name: WsolScores(MaxBoxAcc().from_curves([r["methods"][name]["iou_largest"] for r in rows]),
                              MaxBoxAccV2().from_curves([r["methods"][name]["iou_best"] for r in rows]),
                              float(np.mean([r["methods"][name]["pointing_game"] for r in rows])))
             if rows else None for name in methods}
    return WsolResult(table, len(rows), token, prompt, resolution)
