"""The toy detector's training targets and loss (docs/design.md §6).

A patch belongs to an object when its centre lies inside the object's box; the loss is a sigmoid focal loss
on (patch, query) labels plus 5·L1 + 2·GIoU on the boxes of every patch inside an object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from owlens.boxes import cxcywh_to_xyxy
from owlens.toyworld.world import COLOURS, GRID, IMAGE_SIZE, PATCH_SIZE, SHAPES

__all__ = ["QUERIES", "OwlTargets", "one_to_one_labels", "owl_loss", "scene_targets"]

# (colour | None, shape): 25 colour+shape queries, then 5 shape-only ones; the column order of the logits.
QUERIES: tuple[tuple[str | None, str], ...] = (
    *((c, s) for c in COLOURS for s in SHAPES),
    *((None, s) for s in SHAPES),
)

L1_WEIGHT, GIOU_WEIGHT = 5.0, 2.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass(frozen=True)
class OwlTargets:
    """Dense targets for B scenes on the N = 64 patches and Q = 30 queries.

    labels (B, N, Q) in {0, 1}: the patch's centre is inside a box the query names;
    boxes (B, N, 4): that object's box, cx, cy, w, h in [0, 1]; inside (B, N) bool;
    owner (B, N) int64: index of the object in ``scene.objects``, -1 on background.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    inside: torch.Tensor
    owner: torch.Tensor


def scene_targets(scenes) -> OwlTargets:
    """A patch belongs to the object whose box holds its centre (objects never overlap, so at most one)."""
    centres = (np.arange(GRID) + 0.5) * PATCH_SIZE
    cy, cx = (a.reshape(-1) for a in np.meshgrid(centres, centres, indexing="ij"))  # (N,), row-major
    labels = np.zeros((len(scenes), GRID * GRID, len(QUERIES)), np.float32)
    boxes = np.zeros((len(scenes), GRID * GRID, 4), np.float32)
    owner = np.full((len(scenes), GRID * GRID), -1, np.int64)
    for i, scene in enumerate(scenes):
        for k, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj.box_xyxy
            hit = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
            labels[i, hit] = [q == (obj.colour, obj.shape) or q == (None, obj.shape) for q in QUERIES]
            boxes[i, hit] = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / IMAGE_SIZE
            owner[i, hit] = k
    owner_t = torch.from_numpy(owner)
    return OwlTargets(torch.from_numpy(labels), torch.from_numpy(boxes), owner_t >= 0, owner_t)


@torch.no_grad()
def one_to_one_labels(logits: torch.Tensor, boxes: torch.Tensor, targets: OwlTargets) -> torch.Tensor:
    """Labels (B, N, Q) with one positive patch per object: DETR's matching restricted to its patches.

    Real OWL-ViT is trained with bipartite matching, so it fires once per object and needs no NMS; here
    the match is the inside patch of least DETR cost (-p(class) + 5·L1 + 2·(1 - GIoU)). Patches of an
    object never overlap another's, so the per-object argmin is the optimal bipartite assignment.
    """
    b, n, _ = logits.shape
    p_obj = (torch.sigmoid(logits) * targets.labels).amax(-1)  # (B, N) best score over the object's queries
    l1 = (boxes - targets.boxes).abs().sum(-1)
    giou = _giou(cxcywh_to_xyxy(boxes).reshape(-1, 4), cxcywh_to_xyxy(targets.boxes).reshape(-1, 4)).reshape(b, n)
    cost = -p_obj + L1_WEIGHT * l1 + GIOU_WEIGHT * (1 - giou)  # (B, N)
    keep = torch.zeros(b, n, dtype=torch.bool)
    for k in range(int(targets.owner.max()) + 1):
        mine = targets.owner == k  # (B, N)
        best = torch.where(mine, cost, torch.inf).argmin(-1)  # (B,)
        keep[torch.arange(b), best] |= mine.any(-1)
    return targets.labels * keep[..., None]


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of paired xyxy boxes (M, 4), (M, 4) -> (M,)."""
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area(a) + area(b) - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    iou = inter / union.clamp(min=1e-9)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def owl_loss(logits, boxes, targets: OwlTargets, *, one_to_one: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal loss on (B, N, Q) logits, + 5·L1 + 2·GIoU on the (B, N, 4) boxes of every patch inside an object.

    Class labels are dense (every inside patch) or ``one_to_one`` (one matched patch per object). The focal
    sum is divided by the number of positive (patch, query) pairs, as in DETR-style detectors.
    """
    labels = one_to_one_labels(logits, boxes, targets) if one_to_one else targets.labels
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = p * labels + (1 - p) * (1 - labels)
    alpha_t = FOCAL_ALPHA * labels + (1 - FOCAL_ALPHA) * (1 - labels)
    focal = (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).sum() / labels.sum().clamp(min=1)
    pred, tgt = boxes[targets.inside], targets.boxes[targets.inside]  # (M, 4)
    if len(pred):
        l1 = (pred - tgt).abs().sum(-1).mean()
        giou = (1 - _giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(tgt))).mean()
    else:
        l1 = giou = logits.new_zeros(())
    total = focal + L1_WEIGHT * l1 + GIOU_WEIGHT * giou
    return total, {"focal": focal.item(), "l1": l1.item(), "giou": giou.item()}
