"""Pixel-space games against a literal loop, the shared fast path against the one-map games, causal truth."""

import numpy as np
import pytest
import torch

from owlens.evaluation import DeletionInsertion
from owlens.evaluation.causal import causal_truth
from owlens.evaluation.games import CaseGames
from owlens.evaluation.insertion_deletion import token_order
from owlens.evaluation.pixel_deletion import PixelDeletionInsertion, patch_images
from owlens.evaluation.saliency_cases import SaliencyCase
from owlens.toyworld.tiny import tiny_joint, tiny_processor
from owlens.toyworld.world import sample_scene, without

PROMPT = "<s> USER: <image>\nis there a star ? ASSISTANT:"
# Images go through the image processor, which normalises pixels in float32 whatever the model's dtype: a
# re-encoded image agrees with another encoding of it to float32 precision, not float64.
PIXEL_TOL = 1e-6


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, dtype=torch.float64, processor=tiny_processor())


@pytest.fixture(scope="module")
def scene():
    return sample_scene(np.random.default_rng(4), n_objects=3, prior=False)


def _yes(model):
    return model.processor.mllm_tokenizer.convert_tokens_to_ids("yes")


def _ids(model):
    return model.processor.prompts([PROMPT])["input_ids"][0]


def _logit(model, image, token_id):
    with torch.no_grad():
        return float(model.logits(model.encode_images([image]), [PROMPT])[0, -1, token_id])


def test_patch_images_replace_whole_patches_by_the_background(scene):
    replaced = np.zeros((2, 16), bool)
    replaced[1, [0, 5]] = True  # the tiny OWL's grid is 4x4: patches of 16x16 pixels
    out = patch_images(scene.image, scene.background, replaced, (4, 4))
    assert np.array_equal(out[0], scene.image)
    assert np.array_equal(out[1, :16, :16], scene.background[:16, :16])
    assert np.array_equal(out[1, 16:32, 16:32], scene.background[16:32, 16:32])
    keep = np.ones((64, 64), bool)
    keep[:16, :16] = keep[16:32, 16:32] = False
    assert np.array_equal(out[1][keep], scene.image[keep])


def test_pixel_curves_equal_the_literal_loop(model, scene):
    saliency_map = np.random.default_rng(1).random((64, 64))
    result = PixelDeletionInsertion(model, steps=4, batch_size=3)(scene.image, scene.background, _ids(model),
                                                                 _yes(model), saliency_map)
    order = token_order(saliency_map, model.grid)
    for k, count in enumerate([0, 4, 8, 12, 16]):
        for curve, replaced in ((result.deletion, order[:count]), (result.insertion, order[count:])):
            mask = np.zeros((1, 16), bool)
            mask[0, replaced] = True
            image = patch_images(scene.image, scene.background, mask, model.grid)[0]
            assert curve[k] == pytest.approx(_logit(model, image, _yes(model)), abs=PIXEL_TOL)
    assert result.deletion[0] == pytest.approx(_logit(model, scene.image, _yes(model)), abs=PIXEL_TOL)
    assert result.insertion[0] == pytest.approx(_logit(model, scene.background, _yes(model)), abs=PIXEL_TOL)


def test_case_games_equal_the_one_map_games(model, scene):
    rng = np.random.default_rng(2)
    maps = {"a": rng.random((64, 64)), "b": rng.random((64, 64)), "same as a": None, "flat": np.zeros((64, 64))}
    maps["same as a"] = maps["a"].copy()
    with torch.no_grad():
        embedding = model.encode_images([scene.image])[0]
    replacement = torch.randn(embedding.shape[-1], dtype=embedding.dtype, generator=torch.Generator().manual_seed(0))
    fast = CaseGames(model, steps=5, pixel_steps=3, replacement=replacement, batch_size=4)
    got = fast(embedding, _ids(model), _yes(model), maps, image=scene.image, background=scene.background)
    tokens = DeletionInsertion(model, steps=5, replacement=replacement)
    pixels = PixelDeletionInsertion(model, steps=3)
    for name, saliency_map in maps.items():
        for kind, expected in (("tokens", tokens(embedding, _ids(model), _yes(model), saliency_map)),
                               ("pixels", pixels(scene.image, scene.background, _ids(model), _yes(model),
                                                 saliency_map))):
            result = got[name][kind]
            tolerance = 1e-9 if kind == "tokens" else PIXEL_TOL
            np.testing.assert_allclose(result.deletion, expected.deletion, atol=tolerance)
            np.testing.assert_allclose(result.insertion, expected.insertion, atol=tolerance)
            assert result.deletion_auc == pytest.approx(expected.deletion_auc, abs=tolerance)
    assert fast(embedding, _ids(model), _yes(model), {"a": maps["a"]})["a"]["pixels"] is None


def test_causal_truth_is_the_logit_of_each_re_rendered_scene(model, scene):
    case = SaliencyCase("cue", 0, scene, PROMPT, "yes", "a photo of a star", scene.objects[0].mask,
                        np.array([scene.objects[0].box_xyxy]), cue=f"{scene.objects[0].shape}→star")
    truth, strict = causal_truth(model, [case, case])[0], causal_truth(model, [case], margin=1e9)[0]
    yes = _yes(model)
    assert truth.logit == pytest.approx(_logit(model, scene.image, yes), abs=PIXEL_TOL)
    for k in range(len(scene.objects)):
        assert truth.logit_without[k] == pytest.approx(_logit(model, without(scene, [k]).image, yes), abs=PIXEL_TOL)
    drops = np.array(truth.drops)
    assert truth.cause == (int(drops.argmax()) if drops.max() >= truth.margin else None)
    assert strict.cause is None  # no removal lowers the logit by a billion: no single cause
    assert 0 < truth.p_yes < 1 and len(truth.p_yes_without) == len(scene.objects)
    cues = [k for k, o in enumerate(scene.objects) if o.shape == scene.objects[0].shape]
    no = model.processor.mllm_tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        pair = model.logits(model.encode_images([without(scene, cues).image]), [PROMPT])[0, -1, [yes, no]]
    assert truth.p_yes_without_cues == pytest.approx(float(pair.softmax(-1)[0]), abs=PIXEL_TOL)
