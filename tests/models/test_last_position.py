"""The last-position tail must give the full forward's last logits: padding, grouped heads, other architectures."""

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

from owlens.models.language import LanguageBranch, position_ids
from owlens.models.last_position import supports_last_position


def _llava(text_config, seed=0):
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=text_config, image_token_id=3)
    return LlavaForConditionalGeneration(config).double().eval()


def _text(kind=LlamaConfig, **options):
    return kind(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=64, **options)


def _left_padded(batch=4, length=12, seed=1):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(batch):
        mask[b, :b * 2] = 0  # row b starts after 2b pads
    return torch.randn(batch, length, 32, generator=generator, dtype=torch.float64), mask


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("padded", [False, True])
def test_last_logits_equal_the_full_forward(kv_heads, padded):
    llava = _llava(_text(num_key_value_heads=kv_heads))
    assert supports_last_position(llava)
    embeds, mask = _left_padded()
    mask = mask if padded else None
    with torch.no_grad():
        full = llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        tail = LanguageBranch(llava).last_logits(embeds, mask)
    assert tail.shape == (4, 40)
    torch.testing.assert_close(tail, full, atol=1e-10, rtol=0)


def test_eager_attention_gives_the_same_tail():
    # float32: HF's eager attention softmaxes in float32, where float64's mask minimum turns padded rows to NaN.
    llava = _llava(_text(num_key_value_heads=2)).float()
    llava.set_attn_implementation("eager")
    embeds, mask = _left_padded(seed=3)
    embeds = embeds.float()
    with torch.no_grad():
        full = llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        torch.testing.assert_close(LanguageBranch(llava).last_logits(embeds, mask), full, atol=1e-5, rtol=0)


def test_another_architecture_takes_the_full_forward():
    llava = _llava(_text(MistralConfig, num_key_value_heads=2, sliding_window=4))
    assert not supports_last_position(llava)
    embeds, mask = _left_padded(seed=4)
    with torch.no_grad():
        full = llava(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        torch.testing.assert_close(LanguageBranch(llava).last_logits(embeds, mask), full, atol=1e-10, rtol=0)
