"""One box, one object: named objects are matched to distinct boxes, strongest first."""

import pytest
import torch

from owlens.hallucination.claims import claim_boxes

# Three boxes: 0 and 1 are the same object (IoU 0.81), 2 is elsewhere.
BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])


def test_a_weaker_name_on_a_held_box_is_read_on_its_next_best():
    # cross: 4.0 on box 0; circle: 1.5 on box 1 (the cross's object), -2.0 on box 2
    logits = torch.tensor([[4.0, 1.0], [3.0, 1.5], [-1.0, -2.0]])
    claims = claim_boxes(logits, BOXES)
    assert claims.index.tolist() == [0, 2]
    assert claims.logit.tolist() == [4.0, -2.0]
    assert claims.held_by.tolist() == [-1, 0]


def test_names_on_separate_objects_keep_their_best_boxes():
    logits = torch.tensor([[4.0, -3.0], [3.0, -3.0], [-1.0, 2.0]])
    claims = claim_boxes(logits, BOXES)
    assert claims.index.tolist() == [0, 2] and claims.held_by.tolist() == [-1, -1]
    assert torch.equal(claims.logit, logits.amax(0))


def test_one_name_is_the_plain_maximum():
    # A POPE question names one object: its presence logit must stay the max over boxes (the calibration's scale).
    logits = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    boxes = torch.rand(64, 2, generator=torch.Generator().manual_seed(1)) * 50
    claims = claim_boxes(logits, torch.cat([boxes, boxes + 8], 1))
    assert claims.logit.item() == logits.max().item() and claims.index.item() == int(logits.argmax())


def test_the_stronger_name_wins_whatever_the_order_of_mention():
    logits = torch.tensor([[1.5, 4.0], [1.0, 3.0], [-2.0, -1.0]])  # the second name is the stronger one
    claims = claim_boxes(logits, BOXES)
    assert claims.index.tolist() == [2, 0] and claims.held_by.tolist() == [1, -1]


def test_more_names_than_separate_objects():
    logits = torch.tensor([[3.0, 2.0, 1.0], [2.0, 1.0, 0.5], [-1.0, 1.5, -4.0]])
    claims = claim_boxes(logits, BOXES)
    # 3.0 takes box 0 (and box 1 with it); the second, whose best is box 0 too, takes box 2; the third has
    # nothing left and is read on its weakest box
    assert claims.index.tolist() == [0, 2, 2] and claims.logit[2].item() == -4.0
    assert claims.held_by.tolist() == [-1, 0, 0]


@pytest.mark.parametrize("logits, boxes, iou", [
    (torch.zeros(3, 2), torch.zeros(2, 4), 0.5),
    (torch.zeros(3), BOXES, 0.5),
    (torch.zeros(3, 2), BOXES, 0.0),
    (torch.zeros(3, 2), BOXES, 1.5),
])
def test_bad_inputs_say_what_was_expected(logits, boxes, iou):
    with pytest.raises(ValueError, match="expected|IoU"):
        claim_boxes(logits, boxes, iou)
