"""Connected components of a thresholded map at every threshold at once, and their boxes' IoU with the truth.

The WSOL protocol (``maxboxacc``) thresholds a map at 100 levels and boxes its connected components each time.
Instead of labelling 100 binary images, pixels are added from the highest level down and merged with their
already-added 8-neighbours (union-find), so each threshold reads the components as they stand: one pass over
the pixels for all thresholds. 8-connectivity is what ``cv2.findContours`` follows for the outer contours the
reference implementation boxes.
"""

from __future__ import annotations

import numpy as np

from owlens.boxes import box_iou

__all__ = ["component_ious"]

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def component_ious(levels: np.ndarray, cutoffs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels (H, W), cutoffs (T,), truth boxes (G, 4) → (largest (T,), best (T,)).

    At cutoff t the foreground is ``levels > t``. largest: the IoU (best over the truth boxes) of the box of the
    largest component (by pixel count; equal sizes: the one holding the earliest pixel in raster order); best:
    the highest IoU over all components. Both 0 where the foreground is empty.
    """
    height, width = levels.shape
    flat = levels.ravel()
    order = np.argsort(-flat, kind="stable").tolist()
    values = flat[order].tolist()
    parent = list(range(flat.size))
    x0 = [p % width for p in range(flat.size)]
    y0 = [p // width for p in range(flat.size)]
    x1, y1, size, first = [x + 1 for x in x0], [y + 1 for y in y0], [1] * flat.size, list(range(flat.size))
    added, roots = bytearray(flat.size), set()

    def find(p: int) -> int:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    def union(a: int, b: int) -> None:
        a, b = find(a), find(b)
        if a == b:
            return
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        x0[a], y0[a], x1[a], y1[a] = min(x0[a], x0[b]), min(y0[a], y0[b]), max(x1[a], x1[b]), max(y1[a], y1[b])
        size[a], first[a] = size[a] + size[b], min(first[a], first[b])
        roots.discard(b)

    largest, best = np.zeros(len(cutoffs)), np.zeros(len(cutoffs))
    done, previous = 0, (0.0, 0.0)
    for index in np.argsort(-np.asarray(cutoffs), kind="stable"):
        grown = False
        while done < len(order) and values[done] > cutoffs[index]:
            p = order[done]
            added[p], grown, done = 1, True, done + 1
            roots.add(p)
            r, c = divmod(p, width)
            for dr, dc in _NEIGHBOURS:
                if 0 <= r + dr < height and 0 <= c + dc < width and added[p + dr * width + dc]:
                    union(p, p + dr * width + dc)
        if grown:
            members = sorted(roots)
            ious = box_iou(np.array([[x0[m], y0[m], x1[m], y1[m]] for m in members], dtype=np.float64), truth).max(1)
            pick = min(range(len(members)), key=lambda i: (-size[members[i]], first[members[i]]))
            previous = (float(ious[pick]), float(ious.max()))
        largest[index], best[index] = previous
    return largest, best
