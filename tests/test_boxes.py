"""Box geometry against transformers' own conversion and a literal IoU, for tensors and arrays alike."""

import numpy as np
import pytest
import torch
from transformers.image_transforms import center_to_corners_format

from owlens.boxes import box_iou, cxcywh_to_xyxy


def _literal_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_corners_equal_transformers_then_scale_bit_for_bit(dtype):
    boxes = torch.rand(2, 7, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
    scale = torch.tensor([200, 100, 200, 100], dtype=dtype)
    assert torch.equal(cxcywh_to_xyxy(boxes), center_to_corners_format(boxes))
    assert torch.equal(cxcywh_to_xyxy(boxes, (200, 100)), center_to_corners_format(boxes) * scale)
    assert cxcywh_to_xyxy(boxes).dtype == dtype
    assert np.array_equal(cxcywh_to_xyxy(boxes.numpy(), (200, 100)), cxcywh_to_xyxy(boxes, (200, 100)).numpy())


def test_iou_equals_literal_for_tensors_and_arrays():
    rng = np.random.default_rng(1)
    corners = np.sort(rng.random((6, 2, 2)) * 10, axis=1).transpose(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]]
    expected = np.array([[_literal_iou(a, b) for b in corners[:3]] for a in corners])
    assert np.allclose(box_iou(corners, corners[:3]), expected, rtol=0, atol=1e-12)
    assert torch.allclose(box_iou(torch.from_numpy(corners), torch.from_numpy(corners[:3])),
                          torch.from_numpy(expected), rtol=0, atol=1e-12)


def test_iou_of_empty_boxes_is_zero_not_nan():
    point = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(point, point)[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), point).shape == (0, 1)
