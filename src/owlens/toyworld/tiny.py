"""Tiny, seeded configurations of the real Hugging Face classes, for tests and smoke runs (no downloads).

The two towers differ in resolution but share a 4x4 grid, as OWL-ViT B/32 at 768 and LLaVA-1.5 at 336 share
24x24: that is the case the processor has to get right. Their vocabularies hold the toy world's word tokenizer,
which their processor uses: that is why the tiny pair lives here, above ``models``, and not in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from owlens.models.alignment import Alignment, AlignmentConfig
from owlens.models.joint import JointModel
from owlens.models.loading import OWLENS_CONFIG
from owlens.models.processor import JointProcessor
from owlens.toyworld.text import PROMPT_TEMPLATE
from owlens.toyworld.tokenizer import build_tokenizer

__all__ = ["tiny_owl", "tiny_llava", "tiny_joint", "TINY_VOCAB", "TINY_IMAGE_TOKEN_ID"]

TINY_VOCAB = 64
TINY_IMAGE_TOKEN_ID = 3


def tiny_owl(seed: int = 0, *, grid: int = 4, dtype: torch.dtype = torch.float32):
    """OwlViTForObjectDetection: vision 32-d x 3 layers at 16·grid px, patch 16; text 32-d x 2 layers."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    config = OwlViTConfig(
        text_config={"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16, "pad_token_id": 0,
                     "bos_token_id": 2, "eos_token_id": TINY_VOCAB - 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                       "num_attention_heads": 4, "image_size": 16 * grid, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(config).to(dtype).eval()
    # The default init leaves the heads at N(0, 1), which saturates the box sigmoid; small heads keep
    # gradients (and the fast-vs-slow checks that use them) well conditioned.
    with torch.no_grad():
        for parameter in list(model.class_head.parameters()) + list(model.box_head.parameters()):
            parameter.mul_(0.05)
    return model


def tiny_llava(seed: int = 0, *, grid: int = 4, dtype: torch.dtype = torch.float32):
    """LlavaForConditionalGeneration: CLIP tower 24-d x 2 layers at 8·grid px, patch 8; Llama LM 48-d x 2."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                              image_size=8 * grid, patch_size=8, projection_dim=24)
    text = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=0, bos_token_id=2, eos_token_id=TINY_VOCAB - 1)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=TINY_IMAGE_TOKEN_ID,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).to(dtype).eval()


def tiny_joint(seed: int = 0, *, dtype: torch.dtype = torch.float32, processor=None) -> JointModel:
    """A tiny J with a light W (32 → 48 → 48, GELU); all weights random but seeded."""
    owl, llava = tiny_owl(seed, dtype=dtype), tiny_llava(seed + 1, dtype=dtype)
    torch.manual_seed(seed + 2)
    alignment = Alignment(AlignmentConfig.light(32, 48)).to(dtype)
    return JointModel(owl, llava, alignment, processor)


def tiny_processor():
    """A JointProcessor for the tiny pair: the toy world's word tokenizer, OWL at 64 px, LLaVA at 32 px."""
    from transformers import CLIPImageProcessorPil, OwlViTImageProcessorPil

    tokenizer = build_tokenizer()
    owl_images = OwlViTImageProcessorPil(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    llava_images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return JointProcessor(owl_images, JointProcessor.without_centre_crop(llava_images, 32), tokenizer, tokenizer,
                          grid=(4, 4), image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                          prompt_template=PROMPT_TEMPLATE, query_length=16)


def save_tiny_checkpoints(folder, seed: int = 0) -> dict:
    """Write a tiny J as three folders laid out like real checkpoints: owl/, mllm/, projector/."""
    folder = Path(folder)
    model, processor = tiny_joint(seed), tiny_processor()
    paths = {"owl": folder / "owl", "mllm": folder / "mllm", "projector": folder / "projector"}
    model.owl.save_pretrained(paths["owl"])
    processor.owl_tokenizer.save_pretrained(paths["owl"])
    processor.owl_image_processor.save_pretrained(paths["owl"])
    model.llava.save_pretrained(paths["mllm"])
    processor.mllm_tokenizer.save_pretrained(paths["mllm"])
    processor.mllm_image_processor.save_pretrained(paths["mllm"])
    (paths["mllm"] / OWLENS_CONFIG).write_text(json.dumps({"prompt_template": processor.prompt_template}))
    model.alignment.save_pretrained(paths["projector"])
    return paths
