"""Object attribution on the tiny J: its occlusion logits (pixels and E tokens) against the literal re-run, its
weights, its objects."""

import pytest
import torch

from owlens.explain import ExplainInputs, TokenTarget
from owlens.explain.maps import boxes_to_pixels
from owlens.explain.object_attribution import ObjectAttribution, covered_tokens, default_vocabulary, pixel_contrast
from owlens.toyworld.tiny import tiny_joint, tiny_processor

PROMPT = "<s> USER: <image>\nwhat is in the image ? ASSISTANT: a large red"
VOCABULARY = ["a photo of a circle", "a photo of a star", "a photo of a red cross"]


@pytest.fixture(scope="module")
def model():
    return tiny_joint(0, dtype=torch.float64, processor=tiny_processor())


@pytest.fixture(scope="module")
def inputs(model):
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=model.dtype)
    with torch.no_grad():
        embedding = model.encode(pixels)
    return ExplainInputs.from_embedding(model, embedding, PROMPT, image_sizes=[(64, 64)], pixel_values=pixels)


def _literal_logit(model, embedding, covered, token_id):
    """E with the covered patch tokens replaced by the image's mean patch token, run through the whole of J."""
    changed = embedding.clone()
    changed[0, 1:][covered] = embedding[0, 1:].mean(0)
    with torch.no_grad():
        return float(model.logits(changed, [PROMPT])[0, -1, token_id])


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    area = lambda box: float((box[2] - box[0]) * (box[3] - box[1]))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_covered_tokens_are_the_patch_centres_inside_each_box():
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [40.0, 40.0, 41.0, 41.0], [0.0, 0.0, 64.0, 64.0]])
    covered = covered_tokens(boxes, (4, 4), (64, 64))  # centres at 8, 24, 40, 56
    assert covered[0].view(4, 4)[:2, :2].all() and int(covered[0].sum()) == 4
    assert int(covered[1].sum()) == 1 and bool(covered[1].view(4, 4)[2, 2])  # too small: the nearest centre
    assert bool(covered[2].all())


def _literal_filled_logit(model, pixels, box_xyxy_px, token_id):
    """The image with the box's pixels (centres inside it) set to its per-channel median, through the whole of J."""
    with torch.no_grad():
        return float(model.logits(model.encode(_literal_fill(pixels, box_xyxy_px)), [PROMPT])[0, -1, token_id])


def _literal_fill(pixels, box_xyxy_px, median=None):
    """(1, 3, H, W) pixels with the box's pixels set to ``median`` (default: the image's per-channel median)."""
    x0, y0, x1, y1 = box_xyxy_px
    centres = torch.arange(64, dtype=torch.float64) + 0.5
    cols = (centres >= x0) & (centres < x1)
    rows = (centres >= y0) & (centres < y1)
    if not cols.any():  # a box narrower than a pixel fills the pixel its edge rounds to
        cols[min(63, max(0, int(torch.floor(torch.tensor(x0 + 0.5)))))] = True
    if not rows.any():
        rows[min(63, max(0, int(torch.floor(torch.tensor(y0 + 0.5)))))] = True
    filled = pixels.clone()
    median = pixels[0].flatten(1).median(dim=1).values if median is None else median
    region = rows[:, None] & cols[None, :]
    filled[0][:, region] = median[:, None]
    return filled


def test_pixel_weighting_carries_the_logit_of_the_literal_fill(model, inputs):
    saliency = ObjectAttribution(model, vocabulary=VOCABULARY, top_objects=4).explain(inputs, TokenTarget("circle"))
    assert len(saliency.objects) >= 2
    for obj in saliency.objects:
        literal = _literal_filled_logit(model, inputs.pixel_values, obj.box_xyxy_px, saliency.token_id)
        assert obj.logit_without == pytest.approx(literal, abs=1e-6)
    drops = torch.tensor([max(0.0, o.logit_drop) for o in saliency.objects])
    assert saliency.objects[0].weight == pytest.approx(1.0) and drops[0] == drops.max()


def test_the_second_round_reads_every_other_object_again_with_the_heaviest_filled(model, inputs):
    from owlens.models.postprocess import nms

    one, two = (ObjectAttribution(model, vocabulary=VOCABULARY, rounds=r, min_score=0.0).explain(
        inputs, TokenTarget("circle")) for r in (1, 2))
    corners = boxes_to_pixels(one.boxes_cxcywh, (64, 64))
    first = int(one.class_weights.argmax())
    median = inputs.pixel_values[0].flatten(1).median(dim=1).values  # the original image's, in both rounds
    blanked = _literal_fill(inputs.pixel_values, corners[first].tolist())
    with torch.no_grad():
        logit_first = float(model.logits(model.encode(blanked), [PROMPT])[0, -1, one.token_id])
        own = model.detect(inputs.embedding, VOCABULARY).scores[0].max(-1).values
    others = [a for a in range(len(corners)) if _iou(corners[first], corners[a]) < 0.5]
    # One box per other object: the ones non-maximum suppression keeps over their own best score.
    kept = [others[k] for k in nms(corners[others], own[others], iou=0.5, max_keep=len(others))]
    assert len(kept) >= 2
    drops, read = {}, {}
    with torch.no_grad():
        for k in kept:
            both = model.encode(_literal_fill(blanked, corners[k].tolist(), median))
            read[k] = float(model.logits(both, [PROMPT])[0, -1, one.token_id])
            drops[k] = max(0.0, logit_first - read[k])
    largest = max(drops.values())
    assert largest > 0
    for a in range(len(corners)):
        # The first object's own boxes are gone already; any other takes the drop of the kept boxes it overlaps.
        second = 0.0 if a not in others else max(
            0.5 * drops[k] / largest for k in kept if _iou(corners[a], corners[k]) >= 0.5)
        expected = max(float(one.class_weights[a]), second)
        assert float(two.class_weights[a]) == pytest.approx(expected, abs=1e-6)
    assert int(two.class_weights.argmax()) == first and float(two.class_weights.max()) == pytest.approx(1.0)
    # The listed objects after the first carry the logit with both blanked: that of the kept box they overlap.
    assert two.objects[0].index == first and two.objects[0].logit_without_first is None
    assert all(o.logit_without_first is None for o in one.objects)
    later = [o for o in two.objects[1:] if o.logit_without_first is not None]
    assert later
    for obj in later:
        assert any(obj.logit_without_first == pytest.approx(read[k], abs=1e-6) for k in kept
                   if _iou(corners[obj.index], corners[k]) >= 0.5)


def test_boxes_that_name_no_concept_are_no_atoms(model, inputs):
    with torch.no_grad():
        best = model.detect(inputs.embedding, VOCABULARY).scores[0].max(-1).values  # (N,)
    cut = float(best.median())
    saliency = ObjectAttribution(model, vocabulary=VOCABULARY, min_score=cut).explain(inputs, TokenTarget("circle"))
    assert not bool(saliency.class_weights[best < cut].any()) and bool(saliency.class_weights[best >= cut].any())
    assert all(float(best[o.index]) >= cut for o in saliency.objects)


def test_pixel_weighting_needs_the_pixels(model, inputs):
    only_e = ExplainInputs.from_embedding(model, inputs.embedding, PROMPT, image_sizes=[(64, 64)])
    with pytest.raises(ValueError, match="hold only E: build them with ExplainInputs.from_images"):
        ObjectAttribution(model, vocabulary=VOCABULARY).explain(only_e, TokenTarget("circle"))
    occlusion = ObjectAttribution(model, vocabulary=VOCABULARY, weighting="occlusion")
    assert occlusion.explain(only_e, TokenTarget("circle")).objects


def test_objects_carry_the_logit_of_the_literal_occlusion(model, inputs):
    explainer = ObjectAttribution(model, vocabulary=VOCABULARY, weighting="occlusion", top_objects=4)
    saliency = explainer.explain(inputs, TokenTarget("circle"))
    assert saliency.method == "object_attribution" and 2 <= len(saliency.objects) <= 4
    corners = boxes_to_pixels(saliency.boxes_cxcywh, (64, 64))
    covered = covered_tokens(corners, model.grid, (64, 64))
    with torch.no_grad():
        scores = model.detect(inputs.embedding, VOCABULARY).scores[0]  # (N, C)
    for obj in saliency.objects:
        literal = _literal_logit(model, inputs.embedding, covered[obj.index], saliency.token_id)
        assert obj.logit_without == pytest.approx(literal, abs=1e-6)
        assert obj.logit_drop == pytest.approx(saliency.logit - literal, abs=1e-6)
        assert obj.tokens == int(covered[obj.index].sum())
        # Named by the best query over the boxes overlapping this one at IoU >= 0.5 (itself included).
        neighbours = [m for m in range(len(corners)) if _iou(corners[obj.index], corners[m]) >= 0.5]
        best = max((float(scores[m, c]), c) for m in neighbours for c in range(len(VOCABULARY)))
        assert obj.concept == VOCABULARY[best[1]] and obj.concept_score == pytest.approx(best[0], abs=1e-6)
    for a, b in [(a, b) for a in saliency.objects for b in saliency.objects if a is not b]:
        assert _iou(corners[a.index], corners[b.index]) < 0.5, "listed objects are distinct"
    # Occlusion weights: the clipped drop over the largest drop; the heaviest box is listed first.
    drops = torch.tensor([max(0.0, o.logit_drop) for o in saliency.objects])
    assert saliency.objects[0].weight == pytest.approx(1.0) and drops[0] == drops.max()
    for obj in saliency.objects:
        assert obj.weight == pytest.approx(float(max(0.0, obj.logit_drop) / drops.max()), abs=1e-6)
        assert float(saliency.class_weights[obj.index]) == pytest.approx(obj.weight, abs=1e-6)


def test_the_map_peaks_inside_the_heaviest_box(model, inputs):
    saliency = ObjectAttribution(model, vocabulary=VOCABULARY).explain(inputs, TokenTarget("circle"))
    x0, y0, x1, y1 = saliency.objects[0].box_xyxy_px
    peak = torch.nonzero(saliency.map == saliency.map.max())
    rows, cols = peak[:, 0].double(), peak[:, 1].double()  # pixel (r, c) covers [c, c+1) x [r, r+1)
    assert bool(((cols + 1 > x0) & (cols < x1) & (rows + 1 > y0) & (rows < y1)).all())
    assert float(saliency.map.max()) == pytest.approx(1.0)
    plain = ObjectAttribution(model, vocabulary=VOCABULARY, tie_weight=0.0, centre_weight=0.0,
                              pixel_weight=0.0).explain(inputs, TokenTarget("circle"))
    assert set(torch.unique(plain.map).tolist()) <= set(plain.class_weights.float().tolist()) | {0.0}


def test_pixels_left_equal_are_ordered_by_the_box_weight_covering_them(model, inputs):
    from owlens.explain.maps import paint_boxes

    target = TokenTarget("circle")
    plain, centred = (ObjectAttribution(model, vocabulary=VOCABULARY, tie_weight=0.0, centre_weight=c,
                                        pixel_weight=0.0).explain(inputs, target) for c in (0.0, 1e-4))
    assert torch.equal(plain.class_weights, centred.class_weights)
    corners = boxes_to_pixels(plain.boxes_cxcywh, (64, 64))
    total = paint_boxes(corners, plain.class_weights, (64, 64), combine="sum")
    expected = paint_boxes(corners, plain.class_weights, (64, 64)) + 1e-4 * total / total.max()
    assert torch.allclose(centred.map, expected / expected.max(), atol=1e-7)
    # The maximum is among the plain map's maximal pixels, at those the most box weight covers.
    top = centred.map == centred.map.max()
    assert bool((plain.map[top] == plain.map.max()).all())
    assert float(total[top].min()) == float(total[plain.map == plain.map.max()].max())


def test_pixel_contrast_is_the_distance_from_the_median_at_the_map_size():
    pixels = torch.zeros(3, 4, 4)
    pixels[:, 1, 2] = torch.tensor([3.0, 0.0, 4.0])  # one object pixel, 5 from the background's median 0
    pixels[0, 3, 0] = 1.0
    contrast = pixel_contrast(pixels, (8, 8))
    assert contrast.shape == (8, 8) and float(contrast.max()) == 1.0
    assert bool((contrast[2:4, 4:6] == 1.0).all()) and float(contrast[6, 0]) == pytest.approx(0.2)
    assert float(contrast[0, 0]) == 0.0


def test_the_pixel_lift_orders_a_plateau_by_the_image_and_nothing_else(model, inputs):
    target = TokenTarget("circle")
    plain, lifted = (ObjectAttribution(model, vocabulary=VOCABULARY, pixel_weight=w).explain(inputs, target)
                     for w in (0.0, 1e-3))
    assert torch.equal(plain.class_weights, lifted.class_weights)
    expected = plain.map * (1 + 1e-3 * pixel_contrast(inputs.pixel_values[0], (64, 64)))
    assert torch.allclose(lifted.map, expected / expected.max(), atol=1e-7)
    # Pixels more than 0.1% apart keep their order; the new maximum is among the plain map's top 0.1%.
    assert float(plain.map[lifted.map == lifted.map.max()].min()) >= float(plain.map.max()) / (1 + 1e-3) - 1e-7


def test_gradient_weighting_and_nms_atoms(model, inputs):
    saliency = ObjectAttribution(model, vocabulary=VOCABULARY, atoms="nms", weighting="gradient", max_atoms=3,
                                 top_objects=3).explain(inputs, TokenTarget("circle"))
    assert int((saliency.class_weights > 0).sum()) <= 3 and len(saliency.objects) <= 3
    assert saliency.to_dict()["objects"][0]["concept"] in VOCABULARY


def test_default_vocabulary_is_the_checkpoints_own_else_coco(model):
    assert len(default_vocabulary(model)) == 80 and default_vocabulary(model)[0] == "a photo of a person"
    processor = tiny_processor()
    processor.vocabulary = ("a photo of a star",)
    assert default_vocabulary(tiny_joint(0, processor=processor)) == ("a photo of a star",)


@pytest.mark.parametrize("options, message", [
    ({"atoms": "boxes"}, "atoms must be one of"), ({"weighting": "shap"}, "weighting must be one of"),
    ({"tie_weight": 1.5}, "0 <= tie_weight < 1"), ({"vocabulary": []}, "non-empty list of concept"),
    ({"vocabulary": ["a star", " "]}, "non-empty list of concept"), ({"rounds": 3}, "rounds 1 or 2"),
    ({"min_score": 1.0}, "0 <= min_score < 1"), ({"second_weight": 0.0}, "0 < second_weight < 1"),
    ({"centre_weight": -0.1}, "0 <= centre_weight"), ({"pixel_weight": 1.0}, "0 <= pixel_weight < 1")])
def test_bad_options_say_what_was_expected(model, options, message):
    with pytest.raises(ValueError, match=message):
        ObjectAttribution(model, **options)


def test_pixel_weighting_does_not_depend_on_the_chunk_size(model, inputs, monkeypatch):
    import owlens.explain.object_attribution as module

    whole = ObjectAttribution(model, vocabulary=VOCABULARY).explain(inputs, TokenTarget("circle"))
    monkeypatch.setattr(module, "_ROWS", 3)
    chunked = ObjectAttribution(model, vocabulary=VOCABULARY).explain(inputs, TokenTarget("circle"))
    assert torch.allclose(whole.class_weights, chunked.class_weights, atol=1e-9)
    assert torch.allclose(whole.map, chunked.map, atol=1e-6)
