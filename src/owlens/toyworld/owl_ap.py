"""mAP at IoU 0.5 of the toy detector over its 30 text queries (higher is better; PASCAL VOC protocol).

Every patch's box is a detection for every query, scored sigmoid(logit). Per query, detections are
matched greedily in descending score: a detection is a true positive when its best-IoU ground-truth box
of that query in the same image has IoU > 0.5 and is not yet taken (VOC's rule: a taken best match is a
false positive even if another box would do). AP is the area under the all-point interpolated
precision/recall curve (VOC 2010+); mAP averages it over the queries that have ground truth in the data.
"""

from __future__ import annotations

import numpy as np
import torch

from owlens.boxes import box_iou, cxcywh_to_xyxy
from owlens.explain._borrow import evaluating
from owlens.toyworld.owl_forward import detect, query_tokens
from owlens.toyworld.owl_loss import QUERIES
from owlens.toyworld.world import IMAGE_SIZE, to_pixel_values

__all__ = ["IOU_THRESHOLD", "ap50_per_query", "average_precision", "evaluate_ap50"]

IOU_THRESHOLD = 0.5


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """VOC all-point AP from detection scores (D,), true-positive flags (D,) and the ground-truth count."""
    if n_gt <= 0:
        raise ValueError(f"AP needs at least one ground-truth box, received n_gt={n_gt}")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(tp, np.float64)[order]
    ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
    recall = np.concatenate([[0.0], ctp / n_gt, [1.0]])
    precision = np.concatenate([[0.0], ctp / np.maximum(ctp + cfp, 1e-12), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the interpolated envelope
    step = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))


def _match(scores: np.ndarray, boxes: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """True-positive flags for one image and query: scores (D,), boxes (D, 4) and gts (G, 4) xyxy."""
    tp = np.zeros(len(scores), bool)
    if len(gts) == 0:
        return tp
    iou = box_iou(boxes, gts)
    taken = np.zeros(len(gts), bool)
    for d in np.argsort(-scores, kind="stable"):
        g = int(np.argmax(iou[d]))
        if iou[d, g] > IOU_THRESHOLD and not taken[g]:
            tp[d] = taken[g] = True
        if taken.all():
            break
    return tp


@torch.no_grad()
def _predict(model, tokenizer, scenes, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (S, N, Q) and boxes (S, N, 4) xyxy in pixels for the scenes."""
    with evaluating(model):  # called mid-training: the model goes back to train mode after
        query_ids, query_mask = query_tokens(tokenizer)
        scores, boxes = [], []
        for i in range(0, len(scenes), batch_size):
            images = np.stack([s.image for s in scenes[i : i + batch_size]])
            logits, cxcywh = detect(model, query_ids, query_mask, to_pixel_values(images))
            scores.append(torch.sigmoid(logits.float()).numpy())
            boxes.append(cxcywh_to_xyxy(cxcywh.float(), (IMAGE_SIZE, IMAGE_SIZE)).numpy())
    return np.concatenate(scores), np.concatenate(boxes)


def ap50_per_query(model, tokenizer, scenes, *, batch_size: int = 64) -> dict[tuple[str | None, str], float]:
    """AP at IoU 0.5 for each query (colour | None, shape) that has ground truth in ``scenes``."""
    scores, boxes = _predict(model, tokenizer, list(scenes), batch_size)
    result = {}
    for q, (colour, shape) in enumerate(QUERIES):
        tp = np.zeros(scores.shape[:2], bool)  # (S, N)
        n_gt = 0
        for i, scene in enumerate(scenes):
            gts = np.array(
                [o.box_xyxy for o in scene.objects if o.shape == shape and colour in (None, o.colour)],
                np.float64,
            ).reshape(-1, 4)
            n_gt += len(gts)
            tp[i] = _match(scores[i, :, q], boxes[i], gts)
        if n_gt:
            result[(colour, shape)] = average_precision(scores[:, :, q].ravel(), tp.ravel(), n_gt)
    return result


def evaluate_ap50(model, tokenizer, scenes, *, batch_size: int = 64) -> float:
    """mAP at IoU 0.5 over the 30 queries, averaged over the queries present in ``scenes``."""
    per_query = ap50_per_query(model, tokenizer, scenes, batch_size=batch_size)
    if not per_query:
        raise ValueError("no ground-truth objects in the scenes: mAP is undefined")
    return float(np.mean(list(per_query.values())))
