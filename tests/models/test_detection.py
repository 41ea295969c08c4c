"""The detection branch run from E must be OWL-ViT itself, split at its penultimate layer."""

import pytest
import torch

from owlens.models.detection import DetectionBranch
from owlens.toyworld.tiny import TINY_VOCAB, tiny_owl


def _queries(count=3, length=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, TINY_VOCAB - 1, (count, length), generator=generator)
    ids[:, 0] = 2
    ids[:, 6] = TINY_VOCAB - 1  # end-of-text: the highest id, where OWL's text model pools
    ids[:, 7:] = 0
    mask = (torch.arange(length) < 7).long().expand(count, -1)
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_detect_from_embedding_reproduces_owlvit(dtype):
    owl = tiny_owl(seed=1, dtype=dtype)
    branch = DetectionBranch(owl)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=dtype)
    ids, mask = _queries()
    with torch.no_grad():
        detections = branch.detect(branch.encode(pixels), branch.query_embeds(ids, mask))
        reference = owl(input_ids=ids.repeat(2, 1), pixel_values=pixels, attention_mask=mask.repeat(2, 1))
    assert detections.logits.shape == (2, 16, 3) and detections.grid == (4, 4)
    torch.testing.assert_close(detections.logits, reference.logits.to(dtype), atol=1e-5, rtol=0)
    torch.testing.assert_close(detections.boxes_cxcywh, reference.pred_boxes, atol=1e-5, rtol=0)
    # The heads are not trivial: logits spread, boxes away from the sigmoid's flat ends.
    assert detections.logits.std() > 1e-3 and 0.01 < float(detections.boxes_cxcywh.min())


def test_embedding_is_the_penultimate_hidden_state_with_cls():
    owl = tiny_owl(seed=3)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        embedding = DetectionBranch(owl).encode(pixels)
        states = owl.owlvit.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert embedding.shape == (1, 1 + 16, 32)
    torch.testing.assert_close(embedding, states[-2], atol=0, rtol=0)


def test_presence_and_pixel_boxes_follow_their_definitions():
    owl = tiny_owl(seed=4)
    branch = DetectionBranch(owl)
    ids, mask = _queries(count=2)
    with torch.no_grad():
        detections = branch.detect(branch.encode(torch.randn(1, 3, 64, 64)), branch.query_embeds(ids, mask))
    expected = torch.sigmoid(detections.logits.max(dim=1).values)
    torch.testing.assert_close(detections.presence(), expected)
    cx, cy, w, h = detections.boxes_cxcywh[0, 5].tolist()
    x0, y0, x1, y1 = detections.boxes_xyxy_px((200, 100))[0, 5].tolist()
    assert x0 == pytest.approx((cx - w / 2) * 200, abs=1e-4) and y1 == pytest.approx((cy + h / 2) * 100, abs=1e-4)


def test_owlv2_goes_through_the_same_code():
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    config = Owlv2Config(
        text_config={"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
        projection_dim=32)
    torch.manual_seed(0)
    owl = Owlv2ForObjectDetection(config).eval()
    branch = DetectionBranch(owl)
    pixels = torch.randn(1, 3, 64, 64)
    ids, mask = _queries(count=2)
    with torch.no_grad():
        detections = branch.detect(branch.encode(pixels), branch.query_embeds(ids, mask))
        reference = owl(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    torch.testing.assert_close(detections.logits, reference.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(detections.boxes_cxcywh, reference.pred_boxes, atol=1e-5, rtol=0)


def test_not_a_detector_is_refused():
    with pytest.raises(TypeError, match="OwlViTForObjectDetection"):
        DetectionBranch(torch.nn.Linear(2, 2))
