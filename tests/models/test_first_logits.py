"""The faster paths give the same numbers: generate's first-step logits are the prompt's last logits, and W
applied once per image then indexed equals W applied per question."""

import torch

from owlens.toyworld.tiny import tiny_joint, tiny_processor


def test_first_step_logits_and_w_once_match_the_separate_forward():
    torch.manual_seed(0)
    model = tiny_joint(0, dtype=torch.float64, processor=tiny_processor())
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = torch.tensor([0, 1, 1, 0, 1])
    prompts = [model.processor.chat(q) for q in ("is there a star ?", "is there a circle ?", "what is in the image ?",
                                                 "is there a cross ?", "is there a red square ?")]
    with torch.no_grad():
        unique = model.encode(pixels)
        reference = model.logits(unique[rows], prompts)[:, -1]  # W per question, a second forward
        plain = model.generate(unique[rows], prompts, max_new_tokens=3)
        fast = model.generate_from_tokens(model.image_tokens(unique)[rows], prompts, max_new_tokens=3,
                                          first_logits=True)
    # generate hands its logits out in float32 (transformers casts them), the same values at that precision
    torch.testing.assert_close(fast.first_logits, reference.float(), rtol=1e-6, atol=1e-6)
    assert fast.texts == plain.texts and fast.token_ids == plain.token_ids and plain.first_logits is None
    # the first generated token is the arg-max of those logits (greedy)
    assert [ids[0] for ids in fast.token_ids if ids] == reference.argmax(-1)[[bool(ids) for ids in fast.token_ids]
                                                                              ].tolist()
