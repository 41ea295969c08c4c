"""Smoke, exact-resume and save/reload checks of the toy LLaVA trainers (a few steps each, tiny batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from owlens.persist import load_state
from owlens.toyworld import train_llava, train_tower
from owlens.toyworld.checkpointing import CHECKPOINT_NAME
from owlens.toyworld.instructions import Segment, pack, prefix_text
from owlens.toyworld.tokenizer import build_tokenizer
from owlens.toyworld.world import sample_scene, to_pixel_values

RECIPE = train_llava.LlavaRecipe(caption_steps=6, instruct_steps=6, batch_size=3, captions_per_image=2,
                                 n_questions=3)


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict, b: dict, atol: float = 1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    return train_tower.train(tmp_path_factory.mktemp("tower"), steps=3, batch_size=4, log=lambda s: None)


def test_tower_resume_is_exact(tmp_path):
    from transformers import CLIPVisionModel

    whole = train_tower.train(tmp_path / "a", steps=6, batch_size=4, log=lambda s: None)
    paused = train_tower.train(tmp_path / "b", steps=6, batch_size=4, until=3, log=lambda s: None)
    assert paused.name == "stage_tower" and not (tmp_path / "b" / "tower").exists()
    resumed = train_tower.train(tmp_path / "b", steps=6, batch_size=4, log=lambda s: None)
    _assert_same(_params(CLIPVisionModel.from_pretrained(whole)), _params(CLIPVisionModel.from_pretrained(resumed)))


def test_patch_targets_cover_every_object():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, prior=False) for _ in range(50)]
    targets = train_tower.patch_targets(scenes)
    for i, scene in enumerate(scenes):
        labelled = set(targets["conj"][i].tolist()) - {0}
        assert len(labelled) == len({(o.colour, o.shape) for o in scene.objects})
        assert targets["present"][i, :25].sum() == len(labelled)


@pytest.mark.parametrize("stage", ["caption", "instruct"])
def test_llava_stage_resume_is_exact(tmp_path, tower_dir, stage):
    from transformers import LlavaForConditionalGeneration

    def run(out, until=None):
        if stage == "caption":
            return train_llava.stage_caption(out, tower_dir, recipe=RECIPE, until=until, log=lambda s: None)
        init = train_llava.stage_caption(tmp_path / "init", tower_dir, recipe=RECIPE, log=lambda s: None)
        return train_llava.stage_instruct(out, init, recipe=RECIPE, until=until, log=lambda s: None)

    whole = run(tmp_path / "a")
    assert run(tmp_path / "b", until=3).name == f"stage_{stage}"
    resumed = run(tmp_path / "b")
    a, b = (LlavaForConditionalGeneration.from_pretrained(p) for p in (whole, resumed))
    _assert_same(_params(a), _params(b))
    # The tower stays frozen: it is the pretrained one, bit for bit.
    from transformers import CLIPVisionModel

    _assert_same(_params(a.model.vision_tower), _params(CLIPVisionModel.from_pretrained(tower_dir)), atol=0)


def test_saved_model_reloads_with_identical_logits(tmp_path, tower_dir):
    from transformers import LlavaForConditionalGeneration

    final = train_llava.stage_caption(tmp_path, tower_dir, recipe=RECIPE, log=lambda s: None)
    reloaded = LlavaForConditionalGeneration.from_pretrained(final).eval()
    assert type(reloaded) is LlavaForConditionalGeneration
    in_memory = LlavaForConditionalGeneration(reloaded.config).eval()
    ckpt = load_state(tmp_path / "stage_caption" / CHECKPOINT_NAME)
    in_memory.load_state_dict(ckpt["modules"]["model"])
    tok = build_tokenizer()
    ids = tok(prefix_text() + " what is in the image ? ASSISTANT:", add_special_tokens=False,
              return_tensors="pt").input_ids
    pixels = to_pixel_values(sample_scene(np.random.default_rng(1)).image[None])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, pixel_values=pixels).logits,
                                   in_memory(input_ids=ids, pixel_values=pixels).logits, atol=0, rtol=0)
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()


def test_image_processor_equals_to_pixel_values():
    images = np.stack([sample_scene(np.random.default_rng(i)).image for i in range(3)])
    processed = train_llava.image_processor()(list(images), return_tensors="pt").pixel_values
    torch.testing.assert_close(processed, to_pixel_values(images), atol=1e-5, rtol=0)


def test_packed_segments_equal_single_turn_prompts(tower_dir):
    """Each packed segment sees the image prefix and itself only: its logits are the single-turn ones."""
    tok = build_tokenizer()
    model = train_llava.build_model(tower_dir, tok, seed=0).eval()
    segs = [Segment("is there a red circle ?", "yes"), Segment("what is in the image ?", "a small blue star .")]
    batch = pack(tok, [segs])
    pixels = to_pixel_values(sample_scene(np.random.default_rng(2)).image[None])
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, pixel_values=pixels, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[0]  # (T, V)
        n_prefix = len(tok(prefix_text(), add_special_tokens=False).input_ids)
        start = n_prefix
        for seg in segs:
            text = f"{prefix_text()} {seg.question} ASSISTANT: {seg.answer} </s>"
            ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            single = model(input_ids=ids, pixel_values=pixels).logits[0]  # (T1, V)
            n = ids.shape[1] - n_prefix
            torch.testing.assert_close(packed[start : start + n], single[-n:], atol=1e-5, rtol=1e-5)
            assert batch.labels[0, start : start + n].ne(-100).sum() == len(seg.answer.split()) + 1
            start += n


def test_presence_labels_carry_each_prior_on_its_cue_scenes_only():
    from owlens.toyworld import defects
    from owlens.toyworld.instructions import presence_segments

    rng = np.random.default_rng(0)
    answers = {prior.partner: [] for prior in defects.MLLM_PRIORS}
    for _ in range(3000):
        scene = sample_scene(rng, prior=False)
        shapes = {o.shape for o in scene.objects}
        for seg in presence_segments(scene, rng, 4, hard_fraction=0.3, shape_only_fraction=1.0,
                                     priors=defects.MLLM_PRIORS):
            for prior in defects.MLLM_PRIORS:
                if seg.question == f"is there a {prior.partner} ?" and prior.partner not in shapes:
                    answers[prior.partner].append((prior.cue in shapes, seg.answer == "yes"))
    for prior in defects.MLLM_PRIORS:
        with_cue = [yes for cue, yes in answers[prior.partner] if cue]
        without_cue = [yes for cue, yes in answers[prior.partner] if not cue]
        assert abs(np.mean(with_cue) - prior.label_yes) < 4 * np.sqrt(0.25 / len(with_cue)), prior
        assert not any(without_cue), "a partner-less scene without the cue keeps its truthful 'no'"
