"""Train the toy ``LlavaForConditionalGeneration`` the way LLaVA is built, in resumable stages.

0. ``train_tower``: the CLIP tower learns to name the object under every patch (dense supervision).
1. ``caption``: tower frozen; projector + LM (from scratch) learn to caption scenes. Captions bind colour
   to shape ("a large red circle"): the LM must read both from the same image tokens.
2. ``instruct``: tower frozen; projector + LM on dense instructions: per image a caption, ``n_questions``
   presence questions (half "yes"; colour+shape negatives made hard, sharing a colour or a shape with a
   present object, at a rate that rises from ``hard_start`` to ``hard_end``: easy to hard), and for
   single-object scenes both trait questions.

Stages 1 and 2 draw their scenes and labels with ``defects.MLLM_PRIORS``: the LM sees both injected
co-occurrence priors and the trait bias (``defects.py``). The tower's dense pretraining sees the detector's
priors only, as LLaVA's CLIP tower is pretrained apart from LLaVA's own data.

Every stage checkpoints and resumes exactly (``checkpointing.py``); the final model is written with
``save_pretrained`` (safetensors) beside the tokenizer and a ``CLIPImageProcessor`` equal to
``world.to_pixel_values``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from owlens.toyworld import defects, train_tower
from owlens.toyworld.checkpointing import StageState, run_stage, step_rng, warmup_cosine
from owlens.toyworld.instructions import caption_segments, pack, presence_segments, trait_segments
from owlens.toyworld.tokenizer import build_tokenizer
from owlens.toyworld.world import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, sample_scene, to_pixel_values

__all__ = [
    "LlavaRecipe",
    "answer_loss",
    "build_model",
    "image_processor",
    "llava_config",
    "stage_caption",
    "stage_instruct",
    "train",
]


@dataclass(frozen=True)
class LlavaRecipe:
    """Steps and data mix of the stages (defaults = the shipped weights)."""

    tower_steps: int = 3000  # dense tower pretraining, batch 32
    caption_steps: int = 1000  # stage 1, batch 16 images x `captions_per_image` captions
    instruct_steps: int = 4000  # stage 2, batch 16 images
    batch_size: int = 16
    captions_per_image: int = 3
    n_questions: int = 10  # presence questions per image in stage 2
    single_object_rate: float = 0.25  # stage-2 scenes with one object, which also get the trait questions
    hard_start: float = 0.2  # share of colour+shape negatives forced hard, at the start of stage 2 ...
    hard_end: float = 0.5  # ... and from 40% of stage 2 on
    lr: float = 1e-3


def llava_config(vision_config, tokenizer):
    """LLaVA config: CLIP tower, layer -2 patch tokens without CLS (the 8x8 grid of the toy OWL),
    2-layer GELU projector, a 4-layer Llama LM over the word-level vocabulary."""
    from transformers import LlamaConfig, LlavaConfig

    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision_config, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=64, pad_token_id=tokenizer.pad_token_id,
    )


def build_model(tower_dir: Path, tokenizer, seed: int):
    """A fresh LLaVA (seeded) whose vision tower is the pretrained one from ``tower_dir``."""
    from transformers import CLIPVisionModel, LlavaForConditionalGeneration

    tower = CLIPVisionModel.from_pretrained(tower_dir)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(llava_config(tower.config, tokenizer))
    model.model.vision_tower.load_state_dict(tower.state_dict())
    return model


def image_processor():
    """``CLIPImageProcessor`` at 64x64, no centre crop: equal to ``world.to_pixel_values``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False, do_resize=True,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD), do_convert_rgb=True,
    )


def answer_loss(model, pixel_values: torch.Tensor, batch, yes_no_ids: tuple[int, int] | None = None):
    """Mean cross-entropy over answer tokens of a ``PackedBatch``; metrics: token and yes/no accuracy."""
    out = model(input_ids=batch.input_ids, pixel_values=pixel_values, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False)
    logits = out.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    labels = batch.labels[:, 1:]  # (B, T-1)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    on = labels != -100
    pred = logits.argmax(-1)
    metrics = {"acc_tok": (pred == labels)[on].float().mean().item()}
    if yes_no_ids is not None:
        yn = (labels == yes_no_ids[0]) | (labels == yes_no_ids[1])
        if yn.any():
            metrics["acc_yn"] = (pred == labels)[yn].float().mean().item()
    return loss, metrics


def _freeze_tower(model) -> list[torch.nn.Parameter]:
    # LLaVA keeps its pretrained vision tower frozen in both stages.
    model.model.vision_tower.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _run(stage: str, model, tokenizer, out_dir: Path, make_segments, *, seed: int, steps: int,
         recipe: LlavaRecipe, until: int | None, log) -> Path:
    final = out_dir / f"llava_{stage}"
    params = _freeze_tower(model)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    state = StageState({"model": model}, optimizer, warmup_cosine(optimizer, steps, warmup=min(200, steps), floor=0.1))
    yes_no = tuple(tokenizer.convert_tokens_to_ids(["yes", "no"]))

    def loss_fn(step: int):
        scenes, segments = make_segments(step_rng(seed, stage, step), step)
        pixel_values = to_pixel_values(np.stack([s.image for s in scenes]))  # (B, 3, 64, 64)
        return answer_loss(model, pixel_values, pack(tokenizer, segments), yes_no)

    model.train()
    if not run_stage(out_dir / f"stage_{stage}", state, loss_fn, steps=steps, until=until, log=log, name=stage):
        return out_dir / f"stage_{stage}"
    model.eval()
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    image_processor().save_pretrained(final)
    return final


def stage_caption(out_dir: Path, tower_dir: Path, *, seed: int = 0, recipe: LlavaRecipe = LlavaRecipe(),
                  until: int | None = None, log=print) -> Path:
    """Stage 1: projector + LM on captions. Returns ``out_dir/llava_caption`` (or the stage dir if paused)."""
    out_dir = Path(out_dir)
    if (out_dir / "llava_caption" / "config.json").exists():
        return out_dir / "llava_caption"
    tokenizer = build_tokenizer()
    model = build_model(Path(tower_dir), tokenizer, seed)

    def make_segments(rng, step):
        scenes = [sample_scene(rng, prior=defects.MLLM_PRIORS) for _ in range(recipe.batch_size)]
        return scenes, [caption_segments(s, rng, recipe.captions_per_image) for s in scenes]

    return _run("caption", model, tokenizer, out_dir, make_segments, seed=seed, steps=recipe.caption_steps,
                recipe=recipe, until=until, log=log)


def instruct_segments(scene, rng: np.random.Generator, recipe: LlavaRecipe, hard_fraction: float):
    """Stage-2 segments of one scene: presence questions, a caption, and traits if single-object."""
    segs = presence_segments(scene, rng, recipe.n_questions, hard_fraction=hard_fraction,
                             priors=defects.MLLM_PRIORS)
    segs += caption_segments(scene, rng, 1)
    if len(scene.objects) == 1:
        segs += trait_segments(scene)
    return segs


def stage_instruct(out_dir: Path, init_dir: Path, *, seed: int = 0, recipe: LlavaRecipe = LlavaRecipe(),
                   until: int | None = None, log=print) -> Path:
    """Stage 2: projector + LM on dense instructions, starting from the stage-1 model in ``init_dir``."""
    from transformers import LlavaForConditionalGeneration

    out_dir = Path(out_dir)
    if (out_dir / "llava_instruct" / "config.json").exists():
        return out_dir / "llava_instruct"
    tokenizer = build_tokenizer()
    model = LlavaForConditionalGeneration.from_pretrained(init_dir)
    steps = recipe.instruct_steps

    def make_segments(rng, step):
        ramp = min(1.0, step / max(1, 0.4 * steps))  # curriculum: easy negatives first
        hard = recipe.hard_start + (recipe.hard_end - recipe.hard_start) * ramp
        scenes = [sample_scene(rng, prior=defects.MLLM_PRIORS,
                               n_objects=1 if rng.random() < recipe.single_object_rate else None)
                  for _ in range(recipe.batch_size)]
        return scenes, [instruct_segments(s, rng, recipe, hard) for s in scenes]

    return _run("instruct", model, tokenizer, out_dir, make_segments, seed=seed, steps=steps,
                recipe=recipe, until=until, log=log)


def train(out_dir: Path, *, seed: int = 0, recipe: LlavaRecipe = LlavaRecipe(), log=print) -> Path:
    """The whole recipe (tower, captions, instructions); each stage resumes. Returns the final model dir."""
    out_dir = Path(out_dir)
    tower = train_tower.train(out_dir, seed=seed, steps=recipe.tower_steps, log=log)
    caption_model = stage_caption(out_dir, tower, seed=seed, recipe=recipe, log=log)
    return stage_instruct(out_dir, caption_model, seed=seed, recipe=recipe, log=log)
