"""The language branch must be LLaVA itself when given LLaVA's own image features."""

import pytest
import torch

from owlens.models.language import LanguageBranch
from owlens.toyworld.tiny import TINY_IMAGE_TOKEN_ID, tiny_joint, tiny_llava


def _prompt(batch=2, length=24, start=3):
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(4, 60, (batch, length), generator=generator)
    ids[:, start:start + 16] = TINY_IMAGE_TOKEN_ID
    return ids, torch.ones_like(ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_language_branch_reproduces_llava_with_its_own_features(dtype):
    llava = tiny_llava(seed=2, dtype=dtype)
    pixels = torch.randn(2, 3, 32, 32, dtype=dtype)
    ids, mask = _prompt()
    with torch.no_grad():
        reference = llava(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        branch = LanguageBranch(llava)
        features = branch.own_image_tokens(pixels)
        logits = branch.logits(branch.embed(ids, features), mask)
    assert logits.shape == (2, 24, 64)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)


def test_image_features_land_on_the_placeholders_in_order():
    llava = tiny_llava()
    ids, _ = _prompt(batch=1)
    features = torch.randn(1, 16, 48)
    embeds = LanguageBranch(llava).embed(ids, features)
    torch.testing.assert_close(embeds[0, 3:19], features[0])
    torch.testing.assert_close(embeds[0, :3], llava.get_input_embeddings()(ids[0, :3]))


@pytest.mark.parametrize("placeholders", [0, 15, 17])
def test_placeholder_count_mismatch_says_expected_and_received(placeholders):
    llava = tiny_llava()
    ids = torch.full((1, 30), 7)
    ids[0, :placeholders] = TINY_IMAGE_TOKEN_ID
    with pytest.raises(ValueError, match=rf"exactly 16 image placeholder.*\[{placeholders}\]"):
        LanguageBranch(llava).embed(ids, torch.randn(1, 16, 48))


def test_one_prompt_per_image():
    with pytest.raises(ValueError, match="2 prompts for 1 images"):
        LanguageBranch(tiny_llava()).embed(_prompt(batch=2)[0], torch.randn(1, 16, 48))


class _Tokenizer:
    pad_token_id, eos_token_id = 0, 63

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_generate_is_deterministic_and_leaves_the_global_rng_alone():
    model = tiny_joint(0)
    embedding = model.encode(torch.randn(2, 3, 64, 64))
    ids, mask = _prompt()
    embeds = model.language.embed(ids, model.image_tokens(embedding)).detach()
    greedy = [model.language.generate(embeds, mask, _Tokenizer(), max_new_tokens=6) for _ in range(2)]
    assert greedy[0] == greedy[1] and all(len(ids) == 6 for ids in greedy[0].token_ids)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    sampled = [model.language.generate(embeds, mask, _Tokenizer(), max_new_tokens=6, do_sample=True, seed=s)
               for s in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), state)
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_generation_stops_at_end_of_sequence():
    from owlens.models.language import _until_eos

    assert _until_eos([5, 6, 63, 9], 63) == [5, 6] and _until_eos([5, 6], 63) == [5, 6]


def test_left_padding_does_not_change_a_prompts_logits():
    model = tiny_joint(0)
    ids, _ = _prompt(batch=1, length=20)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones_like(ids)], dim=1)
    image_tokens = model.image_tokens(model.encode(torch.randn(1, 3, 64, 64)))
    with torch.no_grad():
        alone = model.language.logits(model.language.embed(ids, image_tokens), torch.ones_like(ids))
        shifted = model.language.logits(model.language.embed(padded, image_tokens), mask)
    torch.testing.assert_close(shifted[:, 5:], alone, atol=1e-5, rtol=0)
