"""MaxBoxAcc / MaxBoxAccV2 (Choe et al. 2020): hand-made maps, and the one-pass components against a labeller
and against the pixel union-find they replaced."""

from collections import deque

import numpy as np
import pytest

from owlens.boxes import box_iou
from owlens.evaluation import MaxBoxAcc, MaxBoxAccV2
from owlens.evaluation._components import component_ious
from owlens.evaluation.maxboxacc import box_iou_curves, wsol_levels


def _components(mask):
    """Plain 8-connected BFS labelling: boxes x0, y0, x1, y1 (exclusive) and sizes, in raster order of first pixel."""
    seen, out = np.zeros_like(mask), []
    height, width = mask.shape
    for r0 in range(height):
        for c0 in range(width):
            if mask[r0, c0] and not seen[r0, c0]:
                queue, pixels = deque([(r0, c0)]), []
                seen[r0, c0] = True
                while queue:
                    r, c = queue.popleft()
                    pixels.append((r, c))
                    for dr in (-1, 0, 1):
                        for dc in (-1, 0, 1):
                            rr, cc = r + dr, c + dc
                            if 0 <= rr < height and 0 <= cc < width and mask[rr, cc] and not seen[rr, cc]:
                                seen[rr, cc] = True
                                queue.append((rr, cc))
                rows, cols = zip(*pixels)
                out.append(((min(cols), min(rows), max(cols) + 1, max(rows) + 1), len(pixels)))
    return out


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _reference_curves(values, truth, thresholds):
    levels = wsol_levels(values).astype(int)
    largest, best = [], []
    for tau in thresholds:
        found = _components(levels > int(tau * levels.max()))
        if not found:
            largest.append(0.0)
            best.append(0.0)
            continue
        big = max(found, key=lambda item: item[1])  # max keeps the first of equal sizes: raster order
        largest.append(max(_iou(big[0], t) for t in truth))
        best.append(max(_iou(box, t) for box, _ in found for t in truth))
    return np.array(largest), np.array(best)


@pytest.mark.parametrize("seed", range(6))
def test_one_pass_components_equal_labelling_each_threshold(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 6, size=(11, 13)).astype(float) * rng.random((11, 13)).round(1)
    truth = np.array([[2.0, 1.0, 7.0, 6.0], [8.0, 5.0, 13.0, 11.0]])
    thresholds = np.arange(0, 1, 0.01)
    largest, best = box_iou_curves(values, truth, thresholds)
    expected_largest, expected_best = _reference_curves(values, truth, thresholds)
    np.testing.assert_allclose(largest, expected_largest, atol=1e-12)
    np.testing.assert_allclose(best, expected_best, atol=1e-12)


def test_levels_quantise_and_threshold_strictly_as_the_reference():
    values = np.array([[0.0, 0.5, 1.0]])
    assert wsol_levels(values).tolist() == [[0, 127, 255]]
    truth = np.array([1.0, 0.0, 3.0, 1.0])  # the two right pixels
    largest, _ = box_iou_curves(values, truth, np.array([0.49, 0.50]))
    # τ = 0.49 → cutoff 124: levels 127 and 255 are kept (IoU 1); τ = 0.50 → cutoff 127: only 255 (IoU 1/2).
    assert largest.tolist() == [1.0, 0.5]
    assert wsol_levels(np.full((2, 2), 3.0)).max() == 0  # constant map: no box at any threshold
    assert box_iou_curves(np.full((2, 2), 3.0), truth)[0].max() == 0.0


def test_largest_component_vs_all_components():
    values = np.zeros((10, 10))
    values[0:2, 0:2] = 1.0  # small blob on the object
    values[5:10, 5:10] = 1.0  # large blob elsewhere
    truth = np.array([0.0, 0.0, 2.0, 2.0])
    assert MaxBoxAcc()([values], [truth]) == 0.0  # V1 boxes the largest component only
    assert MaxBoxAccV2()([values], [truth]) == 1.0  # V2: the best of all components, at every δ
    assert MaxBoxAcc().curve(values, truth).max() == 0.0 and MaxBoxAccV2().curve(values, truth).max() == 1.0


def test_dataset_score_maximises_over_thresholds_and_averages_deltas():
    curves = np.array([[0.9, 0.6, 0.2], [0.1, 0.55, 0.8], [0.4, 0.45, 0.75]])
    # BoxAcc(δ=0.5) per τ: [1/3, 2/3, 2/3] → 2/3. δ=0.3: [2/3, 1, 2/3] → 1. δ=0.7: [1/3, 0, 2/3] → 2/3.
    assert MaxBoxAcc().from_curves(curves) == pytest.approx(2 / 3)
    assert MaxBoxAccV2().from_curves(curves) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert MaxBoxAcc.higher_is_better and MaxBoxAccV2.iou_thresholds == (0.3, 0.5, 0.7)


def test_exact_box_of_a_flat_map_scores_one():
    values = np.zeros((16, 16))
    values[4:9, 3:12] = 0.8
    assert MaxBoxAcc()([values], [np.array([3.0, 4.0, 12.0, 9.0])]) == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: MaxBoxAcc()([np.zeros((4, 4))], []), "one set of truth boxes per map"),
    (lambda: MaxBoxAcc().from_curves(np.zeros((0, 100))), r"received shape \(0, 100\)"),
    (lambda: MaxBoxAcc().curve(np.zeros((4, 4)), [3.0, 3.0, 1.0, 1.0]), "x1 > x0"),
    (lambda: MaxBoxAcc().curve(np.zeros((4, 4)), np.zeros((0, 4))), "one or more truth boxes"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _pixel_component_ious(levels, cutoffs, truth):
    """The union-find over single pixels that ``component_ious`` was before it worked on runs: the reference its
    results must equal bit for bit (same boxes, so the same ``box_iou`` floats)."""
    height, width = levels.shape
    flat = levels.ravel()
    order = np.argsort(-flat, kind="stable").tolist()
    values = flat[order].tolist()
    parent = list(range(flat.size))
    x0, y0 = [p % width for p in range(flat.size)], [p // width for p in range(flat.size)]
    x1, y1, size, first = [x + 1 for x in x0], [y + 1 for y in y0], [1] * flat.size, list(range(flat.size))
    added, roots = bytearray(flat.size), set()

    def find(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    def union(a, b):
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
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    if (dr or dc) and 0 <= r + dr < height and 0 <= c + dc < width and added[p + dr * width + dc]:
                        union(p, p + dr * width + dc)
        if grown:
            members = sorted(roots)
            ious = box_iou(np.array([[x0[m], y0[m], x1[m], y1[m]] for m in members], dtype=np.float64), truth).max(1)
            pick = min(range(len(members)), key=lambda i: (-size[members[i]], first[members[i]]))
            previous = (float(ious[pick]), float(ious.max()))
        largest[index], best[index] = previous
    return largest, best


def _painted(rng, height, width):
    """Boxes of random signed values added onto a flat background: piecewise constant, nested and overlapping."""
    values = np.zeros((height, width))
    for _ in range(rng.integers(1, 9)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        values[y:y + rng.integers(1, height + 1), x:x + rng.integers(1, width + 1)] += rng.normal()
    return values


_MAPS = {
    "painted": _painted,
    "patch_grid": lambda rng, h, w: np.kron(rng.random((h // 3 + 1, w // 2 + 1)), np.ones((3, 2)))[:h, :w],
    "noisy": lambda rng, h, w: rng.random((h, w)),
    "few_levels": lambda rng, h, w: rng.integers(0, 3, (h, w)).astype(float),  # many equal-sized components
    "checkerboard": lambda rng, h, w: (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(float),
    "constant": lambda rng, h, w: np.full((h, w), rng.random()),
}


@pytest.mark.parametrize("kind", sorted(_MAPS))
@pytest.mark.parametrize("shape", ["square", "one_row", "one_column"])
def test_run_components_equal_the_pixel_union_find_bit_for_bit(kind, shape):
    rng = np.random.default_rng([sorted(_MAPS).index(kind), len(shape)])
    for _ in range(12):
        height, width = {"square": rng.integers(1, 17, 2), "one_row": (1, rng.integers(1, 40)),
                         "one_column": (rng.integers(1, 40), 1)}[shape]
        levels = wsol_levels(_MAPS[kind](rng, int(height), int(width))).astype(np.int64)
        # The protocol's cutoffs, plus unsorted, repeated ones and ones with an empty foreground (≥ the maximum).
        cutoffs = np.concatenate([(np.arange(0, 1, 0.01) * int(levels.max())).astype(int),
                                  rng.integers(-2, 258, 20), [255, 300, -5, 0]])
        corners = rng.uniform(0, max(height, width), (int(rng.integers(1, 5)), 2, 2))
        truth = np.concatenate([corners.min(1), corners.max(1) + 0.5], 1)
        expected = _pixel_component_ious(levels, cutoffs, truth)
        for got, want in zip(component_ious(levels, cutoffs, truth), expected, strict=True):
            np.testing.assert_array_equal(got, want, strict=True)


def test_largest_of_equal_sizes_holds_the_earliest_pixel_in_raster_order():
    levels = np.zeros((4, 6), np.int64)
    levels[1:3, 0:2] = 1  # 4 pixels, leftmost, but starting on row 1
    levels[0:2, 4:6] = 1  # 4 pixels starting on row 0: first in raster order
    left, right = np.array([[0.0, 1.0, 2.0, 3.0]]), np.array([[4.0, 0.0, 6.0, 2.0]])
    assert component_ious(levels, np.array([0]), right)[0].tolist() == [1.0]
    assert component_ious(levels, np.array([0]), left)[0].tolist() == [0.0]
    assert component_ious(levels, np.array([0]), left)[1].tolist() == [1.0]
