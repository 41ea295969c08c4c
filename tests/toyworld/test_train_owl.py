"""The toy OWL trainer: forward equivalence, head init, staged resume, saved artefacts, AP, shipped weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from owlens.models.loading import TOY_WEIGHTS
from owlens.persist import load_state
from owlens.toyworld import owl_ap
from owlens.toyworld.checkpointing import CHECKPOINT_NAME
from owlens.toyworld.owl_loss import QUERIES, one_to_one_labels, owl_loss, scene_targets
from owlens.toyworld.tokenizer import build_tokenizer
from owlens.toyworld.train_owl import build_model, detect, evaluate_ap50, query_tokens, train
from owlens.toyworld.world import sample_scene, to_pixel_values

SHIPPED = TOY_WEIGHTS / "owl"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(5)
    return [sample_scene(rng, prior=False) for _ in range(3)]


def test_detect_equals_the_official_forward(tokenizer, scenes):
    model = build_model(tokenizer, seed=1).eval()
    ids, mask = query_tokens(tokenizer)
    pixels = to_pixel_values(np.stack([s.image for s in scenes]))
    with torch.no_grad():
        logits, boxes = detect(model, ids, mask, pixels)
        ref = model(input_ids=ids.repeat(3, 1), attention_mask=mask.repeat(3, 1), pixel_values=pixels)
    assert logits.shape == (3, 64, len(QUERIES)) and boxes.shape == (3, 64, 4)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(boxes, ref.pred_boxes)


def test_heads_start_unsaturated(tokenizer, scenes):
    model = build_model(tokenizer).eval()
    ids, mask = query_tokens(tokenizer)
    with torch.no_grad():
        logits, boxes = detect(model, ids, mask, to_pixel_values(np.stack([s.image for s in scenes])))
    # The first boxes are the grid prior (one patch wide, 1/8), not a saturated 0 or 1.
    torch.testing.assert_close(boxes, torch.sigmoid(model.box_bias).expand_as(boxes), atol=1e-2, rtol=0)
    assert float(model.box_head.dense2.weight.detach().std()) < 1e-2
    assert -10 < float(logits.min()) and float(logits.max()) < 0


def test_targets_mark_the_patches_inside_matching_boxes(scenes):
    t = scene_targets(scenes)
    centres = (np.arange(8) + 0.5) * 8
    for k, o in enumerate(scenes[0].objects):
        x0, y0, x1, y1 = o.box_xyxy
        hit = ((centres[:, None] >= y0) & (centres[:, None] < y1) & (centres >= x0) & (centres < x1)).reshape(-1)
        assert hit.any(), "every toy object covers at least one patch centre"
        assert (t.owner[0, hit] == k).all() and t.inside[0, hit].all()
        on = {QUERIES[q] for q in np.nonzero(t.labels[0, hit][0].numpy())[0]}
        assert on == {(o.colour, o.shape), (None, o.shape)}
        expected = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / 64
        torch.testing.assert_close(t.boxes[0, hit], expected.expand(int(hit.sum()), 4))
    assert torch.equal(t.inside, t.labels.sum(-1) > 0)


def test_one_to_one_keeps_the_best_matching_patch_of_each_object(scenes):
    t = scene_targets(scenes)
    logits = torch.full(t.labels.shape, -5.0)
    boxes = torch.full(t.boxes.shape, 0.5)
    for i in range(len(scenes)):  # make one patch per object predict its box exactly: the match
        for k in range(len(scenes[i].objects)):
            patch = int(np.nonzero(t.owner[i].numpy() == k)[0][-1])
            boxes[i, patch] = t.boxes[i, patch]
    labels = one_to_one_labels(logits, boxes, t)
    per_object = [(i, k) for i, s in enumerate(scenes) for k in range(len(s.objects))]
    assert int((labels.sum(-1) > 0).sum()) == len(per_object)
    for i, k in per_object:
        patch = int(np.nonzero(t.owner[i].numpy() == k)[0][-1])
        torch.testing.assert_close(labels[i, patch], t.labels[i, patch])
    dense, _ = owl_loss(logits, boxes, t, one_to_one=False)
    sparse, _ = owl_loss(logits, boxes, t, one_to_one=True)
    assert torch.isfinite(dense) and torch.isfinite(sparse) and not torch.equal(dense, sparse)


def test_average_precision_by_hand():
    # Ranked hits 1, 0, 1 of 2 ground truths: precision 1 up to recall 0.5, then 2/3 up to recall 1.
    assert owl_ap.average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2) == pytest.approx(5 / 6)
    assert owl_ap.average_precision(np.array([0.9]), np.array([1]), 4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="received n_gt=0"):
        owl_ap.average_precision(np.array([0.5]), np.array([0]), 0)


def test_voc_matching_counts_a_duplicate_as_a_false_positive():
    gts = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    tp = owl_ap._match(np.array([0.9, 0.8, 0.7, 0.95]), boxes, gts)
    assert tp.tolist() == [True, False, True, False]


def _params(path: Path) -> dict[str, torch.Tensor]:
    from transformers import OwlViTForObjectDetection

    return OwlViTForObjectDetection.from_pretrained(path).state_dict()


def test_staged_training_resumes_exactly_and_saves_a_loadable_model(tmp_path, tokenizer, scenes):
    from transformers import OwlViTForObjectDetection, OwlViTImageProcessor, PreTrainedTokenizerFast

    # one_to_one_from=4: the resumed half crosses from dense to one-to-one labels
    kwargs = dict(steps=6, batch_size=2, checkpoint_every=3, seed=3, one_to_one_from=4)
    staged, logs = tmp_path / "staged", []
    assert train(staged, stop_after=3, log=logs.append, **kwargs) == staged / CHECKPOINT_NAME
    assert load_state(staged / CHECKPOINT_NAME)["step"] == 3
    final = train(staged, log=logs.append, **kwargs)
    assert any("resumed" in m and "step 3" in m for m in logs) and any(m.startswith("step 6/6") for m in logs)
    straight = train(tmp_path / "straight", log=lambda m: None, **kwargs)
    a, b = _params(final), _params(straight)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    with pytest.raises(ValueError, match="this run asks for"):
        train(staged, log=lambda m: None, **{**kwargs, "seed": 4})

    # The saved directory reproduces the trained model, with its tokenizer and image processor.
    trained = build_model(tokenizer)
    trained.load_state_dict(load_state(staged / CHECKPOINT_NAME)["model"])
    loaded = OwlViTForObjectDetection.from_pretrained(final).eval()
    loaded_tok = PreTrainedTokenizerFast.from_pretrained(final)
    images = np.stack([s.image for s in scenes])
    pixels = OwlViTImageProcessor.from_pretrained(final)(images=list(images), return_tensors="pt").pixel_values
    torch.testing.assert_close(pixels, to_pixel_values(images), atol=1e-6, rtol=0)
    with torch.no_grad():
        ref = detect(trained.eval(), *query_tokens(tokenizer), to_pixel_values(images))
        got = detect(loaded, *query_tokens(loaded_tok), pixels)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])
    assert next(loaded.parameters()).dtype == torch.float32


@pytest.mark.toy_weights
def test_shipped_owl_detects_held_out_scenes():
    from transformers import OwlViTForObjectDetection, PreTrainedTokenizerFast

    model = OwlViTForObjectDetection.from_pretrained(SHIPPED).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(SHIPPED)
    rng = np.random.default_rng(20240)  # held out: the uniform distribution, a seed training never used
    scenes = [sample_scene(rng, prior=False) for _ in range(100)]
    assert evaluate_ap50(model, tokenizer, scenes) >= 0.8
