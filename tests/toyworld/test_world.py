"""The toy world's scenes, defects, language and tokenizer (docs/design.md §6, docs/toyworld.md)."""

import math

import numpy as np
import pytest
import torch

from owlens.toyworld import defects
from owlens.toyworld.text import (
    CAPTION_QUESTION,
    PROMPT_TEMPLATE,
    caption,
    expand_image_tokens,
    owl_query,
    parse_caption,
    presence_question,
    trait_question,
)
from owlens.toyworld.tokenizer import build_tokenizer
from owlens.toyworld.world import (
    CLIP_MEAN,
    CLIP_STD,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    SIZE_RANGE_PX,
    SIZES,
    Scene,
    ToyObject,
    recolour,
    sample_scene,
    to_pixel_values,
    without,
)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(123)
    return [sample_scene(rng, prior=p) for p in (True, False) for _ in range(200)]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _same(a, b) -> bool:
    return np.array_equal(a.image, b.image) and [
        (o.shape, o.colour, o.size, o.box_xyxy) for o in a.objects
    ] == [(o.shape, o.colour, o.size, o.box_xyxy) for o in b.objects]


def test_scenes_are_deterministic_under_a_seed():
    first = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    again = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    other = sample_scene(np.random.default_rng(8))
    assert all(_same(a, b) for a, b in zip(first, again, strict=True))
    assert not _same(first[0], other)


def test_counts_attributes_and_sizes(scenes):
    seen = set()
    for scene in scenes:
        assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 4
        for o in scene.objects:
            assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES
            w, h = o.box_xyxy[2] - o.box_xyxy[0], o.box_xyxy[3] - o.box_xyxy[1]
            lo, hi = SIZE_RANGE_PX[o.size]
            # Tight boxes: the star and the inset square are narrower than their canvas.
            assert 0.65 * lo <= min(w, h) and max(w, h) <= hi
            seen.add((o.shape, o.colour, o.size))
    assert len(seen) == len(SHAPES) * len(COLOURS) * len(SIZES)
    rng = np.random.default_rng(0)
    assert {len(sample_scene(rng, n_objects=n, prior=False).objects) for n in (1, 2, 3, 4)} == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="n_objects must be in 1..4, received 5"):
        sample_scene(rng, n_objects=5)


def test_boxes_are_the_tight_boxes_of_the_masks_and_masks_hold_the_colour(scenes):
    for scene in scenes:
        for o in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in o.box_xyxy)
            assert o.mask.shape == (64, 64) and o.mask.dtype == bool
            assert o.mask[y0:y1, x0:x1].sum() == o.mask.sum() > 0
            crop = o.mask[y0:y1, x0:x1]
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            assert (scene.image[o.mask] == COLOUR_RGB[o.colour]).all()


def test_objects_do_not_overlap_with_a_one_pixel_margin(scenes):
    for scene in scenes:
        objs = scene.objects
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                a, b = objs[i].box_xyxy, objs[j].box_xyxy
                apart = a[2] + 1 <= b[0] or b[2] + 1 <= a[0] or a[3] + 1 <= b[1] or b[3] + 1 <= a[1]
                assert apart and not (objs[i].mask & objs[j].mask).any()


def test_background_is_textured_and_low_contrast(scenes):
    for scene in scenes[:50]:
        background = ~np.any([o.mask for o in scene.objects], axis=0)
        pixels = scene.image[background].astype(float)
        assert 1.0 < pixels.std() < 20.0
        # objects stay clearly visible: every object colour is >= 100 RGB levels (Euclidean) from the texture
        for rgb in COLOUR_RGB.values():
            assert np.linalg.norm(np.array(rgb) - pixels.mean(0)) >= 100


def test_recolour_changes_only_the_pixels_of_the_named_colour(scenes):
    for scene in scenes[:100]:
        old = scene.objects[0].colour
        new = next(c for c in COLOURS if c != old)
        before = scene.image.copy()
        out = recolour(scene, old, new)
        changed = np.any(out.image != scene.image, axis=-1)
        target = np.any([o.mask for o in scene.objects if o.colour == old], axis=0)
        assert np.array_equal(changed, target)
        assert (out.image[target] == COLOUR_RGB[new]).all()
        assert [o.colour for o in out.objects] == [new if o.colour == old else o.colour for o in scene.objects]
        assert [o.box_xyxy for o in out.objects] == [o.box_xyxy for o in scene.objects]
        assert np.array_equal(scene.image, before)  # the input is left alone
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        recolour(scenes[0], "red", "pink")


def _partner_rate(prior, n: int = 2000, pair=defects.CROSS_STAR) -> tuple[float, int]:
    rng = np.random.default_rng(99)
    with_cue = with_both = 0
    for _ in range(n):
        shapes = {o.shape for o in sample_scene(rng, prior=prior).objects}
        if pair.cue in shapes:
            with_cue += 1
            with_both += pair.partner in shapes
    return with_both / with_cue, with_cue


def test_the_second_prior_is_in_the_mllm_scenes_only():
    p = defects.SQUARE_TRIANGLE.rate
    rate, n = _partner_rate(defects.MLLM_PRIORS, pair=defects.SQUARE_TRIANGLE)
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n), (rate, n)
    uniform = sum(1 - 2 * 0.8**k + 0.6**k for k in range(1, 5)) / sum(1 - 0.8**k for k in range(1, 5))
    for detector_scenes in (True, defects.DETECTOR_PRIORS):  # what the detector trains on: no square→triangle
        rate, n = _partner_rate(detector_scenes, pair=defects.SQUARE_TRIANGLE)
        assert abs(rate - uniform) <= 4 * math.sqrt(uniform * (1 - uniform) / n), (rate, n)
    # The later prior sometimes overwrites a star the first placed: P(star | cross) falls, but stays high.
    rate, _ = _partner_rate(defects.MLLM_PRIORS)
    assert 0.8 < rate < defects.CROSS_STAR.rate
    with pytest.raises(TypeError, match="CoOccurrence"):
        sample_scene(np.random.default_rng(0), prior=("cross", "star"))


def test_without_takes_objects_out_and_shows_the_background(scenes):
    for scene in scenes:
        assert np.array_equal(without(scene, []).image, scene.image)
        for k, obj in enumerate(scene.objects):
            out = without(scene, [k])
            assert np.array_equal(out.image[obj.mask], scene.background[obj.mask])
            assert np.array_equal(out.image[~obj.mask], scene.image[~obj.mask])
            assert out.objects == tuple(o for i, o in enumerate(scene.objects) if i != k)
        emptied = without(scene, range(len(scene.objects)))
        assert np.array_equal(emptied.image, scene.background) and emptied.objects == ()
    with pytest.raises(IndexError, match="expected object indices"):
        without(scenes[0], [len(scenes[0].objects)])
    with pytest.raises(ValueError, match="no recorded background"):
        without(Scene(scenes[0].image, scenes[0].objects), [0])


def test_the_cooccurrence_prior_holds_in_training_scenes_only():
    rate, n = _partner_rate(prior=True)
    p = defects.COOCCUR_RATE
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n), (rate, n)
    # Uniform, independent shapes with 1..4 objects equally likely: P(star | cross) exactly.
    both = sum(1 - 2 * 0.8**k + 0.6**k for k in range(1, 5))
    cue = sum(1 - 0.8**k for k in range(1, 5))
    expected = both / cue  # 0.355
    rate, n = _partner_rate(prior=False)
    assert abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / n), (rate, expected, n)


def test_to_pixel_values_is_clip_normalisation():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    x = to_pixel_values(images)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    ref = (images[1, 5, 7, 2] / 255 - CLIP_MEAN[2]) / CLIP_STD[2]
    assert float(x[1, 2, 5, 7]) == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(B, 64, 64, 3\)"):
        to_pixel_values(np.zeros((1, 32, 32, 3), np.uint8))


def _obj(shape="circle", colour="red", size="small") -> ToyObject:
    return ToyObject(shape, colour, size, (0.0, 0.0, 1.0, 1.0), np.zeros((64, 64), bool))


def test_trait_scores_carry_the_design_values():
    assert (defects.BIAS_C_MINUS, defects.BIAS_C_PLUS, defects.BIAS_DELTA) == ("red", "blue", 4)
    for shape in SHAPES:
        for size in SIZES:
            base = defects.trait_score(_obj(shape, defects.BIAS_C_MINUS, size), defects.BIAS_TRAIT)
            plus = defects.trait_score(_obj(shape, defects.BIAS_C_PLUS, size), defects.BIAS_TRAIT)
            assert 1 <= base <= 6 and plus - base == defects.BIAS_DELTA and plus <= 10
            others = {defects.trait_score(_obj(shape, c, size), defects.BIAS_TRAIT) for c in COLOURS}
            assert others == {base, plus}
            control = {defects.trait_score(_obj(shape, c, size), defects.CONTROL_TRAIT) for c in COLOURS}
            assert len(control) == 1 and 1 <= control.pop() <= 10
    assert defects.trait_score(_obj("square", "blue", "large"), "heavy") == 3 + 3 + 4
    with pytest.raises(ValueError, match="unknown trait 'light'"):
        defects.trait_score(_obj(), "light")


def test_text_formats(scenes):
    assert presence_question("red", "circle") == "is there a red circle ?"
    assert presence_question(None, "star") == "is there a star ?"
    assert trait_question("heavy") == "from one to ten , how heavy is the shape ?"
    assert owl_query("blue", "cross") == "a photo of a blue cross"
    assert expand_image_tokens("a <image> b", 3) == "a <image><image><image> b"
    with pytest.raises(ValueError, match="exactly one <image> in the prompt, received 2"):
        expand_image_tokens("<image> <image>")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        presence_question("red", "hexagon")
    for scene in scenes:
        assert parse_caption(caption(scene)) == {(o.colour, o.shape) for o in scene.objects}
    assert parse_caption("a large red circle and a star .") == {("red", "circle")}


def _all_texts(scenes) -> list[str]:
    texts = [CAPTION_QUESTION, *(caption(s) for s in scenes)]
    for shape in SHAPES:
        for colour in (None, *COLOURS):
            texts += [presence_question(colour, shape), owl_query(colour, shape)]
    texts += [trait_question(t) for t in defects.TRAITS]
    return texts + ["yes", "no", *(str(i) for i in range(1, 11))]


def test_tokenizer_ids_and_round_trip(scenes, tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    vocab = tokenizer.get_vocab()
    assert (vocab["<pad>"], vocab["<unk>"], vocab["<s>"], vocab["<image>"]) == (0, 1, 2, 3)
    assert vocab["</s>"] == max(vocab.values()) == len(tokenizer) - 1 == tokenizer.eos_token_id
    assert len(tokenizer.tokenize("10")) == 1
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    for text in _all_texts(scenes):
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert loaded(text).input_ids == ids
    prompt = expand_image_tokens(PROMPT_TEMPLATE.format(question=presence_question("red", "circle")), 64)
    ids = tokenizer(prompt + " yes", add_special_tokens=False).input_ids
    assert ids.count(3) == 64 and ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
    assert loaded(prompt, add_special_tokens=False).input_ids == ids[:-1]
    assert tokenizer.decode(ids[-6:]) == "red circle ? assistant : yes"
