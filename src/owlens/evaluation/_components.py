"""Connected components of a thresholded map at every threshold at once, and their boxes' IoU with the truth.

The WSOL protocol (``maxboxacc``) thresholds a map at 100 levels and boxes its connected components each time.
Instead of labelling 100 binary images, the map is added from the highest level down and merged with what is
already there (union-find), so each threshold reads the components as they stand: one pass for all thresholds.
The nodes are runs (a row's stretches of one level), not pixels: maps are mostly piecewise constant (painted
boxes, upsampled patch grids), so there are far fewer of them, and the set ``levels > t`` does not depend on
the order within a level. 8-connectivity is what ``cv2.findContours`` follows for the outer contours the
reference implementation boxes.
"""

from __future__ import annotations

import numpy as np

from owlens.boxes import box_iou

__all__ = ["component_ious"]


def _runs(levels: np.ndarray):
    """Levels (H, W) → runs in raster order: first pixel (raster index), row, start and end (exclusive) columns,
    level; and the 8-adjacent pairs (a, b): neighbours in a row, and runs of adjacent rows whose column spans
    overlap once one of them is widened by a column on each side."""
    height, width = levels.shape
    starts = np.ones((height, width), bool)
    starts[:, 1:] = levels[:, 1:] != levels[:, :-1]
    ends = np.ones((height, width), bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.flatnonzero(starts)
    row, c0 = np.divmod(first, width)
    c1 = np.flatnonzero(ends) + 1 - row * width
    run_of = (np.cumsum(starts.ravel()) - 1).reshape(height, width)
    beside = np.flatnonzero(row[1:] == row[:-1])
    upper = np.flatnonzero(row < height - 1)
    # The runs of the next row tile it: a run touches those from the one under its left neighbour column to the one
    # under its right neighbour column.
    low = run_of[row[upper] + 1, np.maximum(c0[upper] - 1, 0)]
    count = run_of[row[upper] + 1, np.minimum(c1[upper], width - 1)] - low + 1
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    a = np.concatenate([beside, np.repeat(upper, count)])
    b = np.concatenate([beside + 1, np.repeat(low, count) + offset])
    return first, row, c0, c1, levels.ravel()[first], a, b


def component_ious(levels: np.ndarray, cutoffs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels (H, W), cutoffs (T,), truth boxes (G, 4) → (largest (T,), best (T,)).

    At cutoff t the foreground is ``levels > t``. largest: the IoU (best over the truth boxes) of the box of the
    largest component (by pixel count; equal sizes: the one holding the earliest pixel in raster order); best:
    the highest IoU over all components. Both 0 where the foreground is empty.

    Each cutoff that adds pixels is a read. A component's box only changes when it merges, so rather than boxing
    every component at every read, each box is kept with the reads it stood through and all are scored in one
    ``box_iou`` call. The largest component is followed as runs come in and merge: a merge only grows, so the
    largest is the one it was or the one just added or merged.
    """
    cutoffs = np.asarray(cutoffs)
    first, row, c0, c1, run_level, edge_a, edge_b = _runs(np.asarray(levels))
    node_order = np.argsort(run_level, kind="stable")[::-1]  # highest first; the order within a level is free
    node_levels, node_order = run_level[node_order].tolist(), node_order.tolist()
    edge_level = np.minimum(run_level[edge_a], run_level[edge_b])  # a pair joins once both its runs are in
    edge_order = np.argsort(edge_level, kind="stable")[::-1]
    edge_levels, edge_a, edge_b = (edge_level[edge_order].tolist(), edge_a[edge_order].tolist(),
                                   edge_b[edge_order].tolist())
    parent = list(range(len(first)))
    x0, y0, x1, y1 = c0.tolist(), row.tolist(), c1.tolist(), (row + 1).tolist()
    size, first = (c1 - c0).tolist(), first.tolist()
    since = [0] * len(parent)  # the read at which a root's current box began
    states: list[tuple[int, int, int, int, int, int]] = []  # x0, y0, x1, y1, first read, end read
    largest_boxes: list[tuple[int, int, int, int]] = []
    read_at = np.full(len(cutoffs), -1)  # each cutoff's read: the last one that added pixels; -1 none yet (empty)
    reads, big, done, joined = 0, -1, 0, 0
    for index, cutoff in sorted(enumerate(cutoffs.tolist()), key=lambda item: -item[1]):
        grown = False
        while done < len(node_levels) and node_levels[done] > cutoff:
            p = node_order[done]
            done, grown, since[p] = done + 1, True, reads
            if big < 0 or size[p] > size[big] or (size[p] == size[big] and first[p] < first[big]):
                big = p
        while joined < len(edge_levels) and edge_levels[joined] > cutoff:
            a, b = edge_a[joined], edge_b[joined]
            joined += 1
            while parent[a] != a:
                parent[a] = a = parent[parent[a]]
            while parent[b] != b:
                parent[b] = b = parent[parent[b]]
            if a == b:
                continue
            if size[a] < size[b]:
                a, b = b, a
            if since[a] < reads:
                states.append((x0[a], y0[a], x1[a], y1[a], since[a], reads))
            if since[b] < reads:
                states.append((x0[b], y0[b], x1[b], y1[b], since[b], reads))
            parent[b], since[a] = a, reads
            x0[a], y0[a], x1[a], y1[a] = min(x0[a], x0[b]), min(y0[a], y0[b]), max(x1[a], x1[b]), max(y1[a], y1[b])
            size[a], first[a] = size[a] + size[b], min(first[a], first[b])
            if size[a] > size[big] or (size[a] == size[big] and first[a] < first[big]):
                big = a
        if grown:
            largest_boxes.append((x0[big], y0[big], x1[big], y1[big]))
            reads += 1
        read_at[index] = reads - 1
    states += [(x0[p], y0[p], x1[p], y1[p], since[p], reads) for p in node_order[:done] if parent[p] == p]
    largest, best = np.zeros(len(cutoffs)), np.zeros(len(cutoffs))
    if reads:
        state = np.array(states, dtype=np.int64)
        ious = box_iou(state[:, :4].astype(np.float64), truth).max(1)
        span = state[:, 5] - state[:, 4]
        read = np.repeat(state[:, 4] - np.cumsum(span) + span, span) + np.arange(span.sum())  # each read it stood
        order = np.argsort(read, kind="stable")  # every read has a component: no empty group for reduceat
        best_read = np.maximum.reduceat(np.repeat(ious, span)[order], np.searchsorted(read[order], np.arange(reads)))
        largest_read = box_iou(np.array(largest_boxes, dtype=np.float64), truth).max(1)
        seen = read_at >= 0
        largest[seen], best[seen] = largest_read[read_at[seen]], best_read[read_at[seen]]
    return largest, best
