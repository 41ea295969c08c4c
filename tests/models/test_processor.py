"""One image, two branches, aligned grids; prompts with exactly the image tokens LLaVA expects."""

import numpy as np
import pytest
import torch
from PIL import Image

from owlens.models.processor import GridMismatchError, check_grids
from owlens.toyworld.tiny import TINY_IMAGE_TOKEN_ID, tiny_llava, tiny_owl, tiny_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_placeholder_expands_to_one_token_per_patch(processor):
    inputs = processor.prompts([processor.chat("is there a red circle ?"), processor.chat("is there a star ?")])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ((ids == TINY_IMAGE_TOKEN_ID).sum(dim=1) == 16).all()
    # left padding: the shorter prompt is padded in front, so generation continues right after the prompt
    assert mask[1, 0] == 0 and mask[1, -1] == 1 and mask[0].all()
    assert ids[0, 0] == processor.mllm_tokenizer.bos_token_id
    assert (ids[0] == processor.mllm_tokenizer.eos_token_id).sum() == 0  # no </s> inside a prompt


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    ("is there a red circle ?", "no image placeholder"),
    ("<image> <image> is there a star ?", "2 image placeholders"),
])
def test_bad_prompts(processor, text, message):
    with pytest.raises(ValueError, match=message):
        processor.prompts([text])


def test_already_expanded_prompt_is_kept(processor):
    text = "<s> " + "<image> " * 16 + "is there a star ?"
    assert (processor.prompts([text])["input_ids"] == TINY_IMAGE_TOKEN_ID).sum() == 16


def test_empty_question_and_queries(processor):
    with pytest.raises(ValueError, match="empty"):
        processor.chat(" ")
    with pytest.raises(ValueError, match="non-empty"):
        processor.queries(["a photo of a star", ""])


def test_queries_are_padded_like_owl_and_end_at_the_highest_id(processor):
    queries = processor.queries(["a photo of a red circle", "a photo of a star"])
    assert queries["input_ids"].shape == (2, 16)
    eos = processor.owl_tokenizer.eos_token_id
    assert (queries["input_ids"].argmax(dim=1) == (queries["input_ids"] == eos).int().argmax(dim=1)).all()


def test_mllm_pixels_cover_the_whole_image_without_centre_crop(processor):
    # A wide image whose right third is white: a centre crop would lose it, a plain resize keeps it.
    array = np.zeros((30, 90, 3), dtype=np.uint8)
    array[:, 60:] = 255
    pixels = processor.mllm_pixel_values(Image.fromarray(array))
    assert pixels.shape == (1, 3, 32, 32)
    assert pixels[0, :, :, -4:].mean() > 1.5 and pixels[0, :, :, :16].mean() < -1.0
    assert processor.pixel_values(array).shape == (1, 3, 64, 64)


def test_grids_must_match():
    assert check_grids(tiny_owl().config, tiny_llava().config) == (4, 4)
    with pytest.raises(GridMismatchError, match=r"4x4 patch grid .* 5x5 image tokens"):
        check_grids(tiny_owl().config, tiny_llava(grid=5).config)
    full = tiny_llava().config
    full.vision_feature_select_strategy = "full"
    with pytest.raises(GridMismatchError, match="CLS"):
        check_grids(tiny_owl().config, full)


def test_joint_model_refuses_mismatched_grids():
    from owlens.models.alignment import Alignment, AlignmentConfig
    from owlens.models.joint import JointModel

    with pytest.raises(GridMismatchError):
        JointModel(tiny_owl(grid=3), tiny_llava(), Alignment(AlignmentConfig.light(32, 48)))


def test_high_level_calls_agree_with_the_tensor_calls(processor):
    from owlens.toyworld.tiny import tiny_joint

    model = tiny_joint(0, processor=processor)
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    with torch.no_grad():
        embedding = model.encode_images(image)
        torch.testing.assert_close(embedding, model.encode(processor.pixel_values(image)), atol=0, rtol=0)
        by_text = model.detect(embedding, ["a photo of a star"])
        by_embeds = model.detect(embedding, model.query_embeds(processor.queries(["a photo of a star"])))
    torch.testing.assert_close(by_text.logits, by_embeds.logits, atol=0, rtol=0)
