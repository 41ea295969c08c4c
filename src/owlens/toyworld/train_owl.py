"""Train the toy world's detector: a tiny ``OwlViTForObjectDetection`` that finds shapes by text query.

Recipe (docs/design.md §6; measured by a feasibility prototype first): every training image is
scored against all 30 queries (25 "a photo of a {colour} {shape}" + 5 "a photo of a {shape}"). A patch is
positive for a query when its centre lies inside the box of an object the query names; the loss is a
sigmoid focal loss on those labels plus 5·L1 + 2·GIoU on the boxes of the patches inside an object.
From ``one_to_one_from`` on, only the best-matching patch of each object stays positive (``owl_loss``),
so the detector fires once per object as OWL-ViT does. Scenes come fresh from
``sample_scene(prior=True)`` (the training distribution) each step.

Staged: a checkpoint (model, optimizer, scheduler, step, RNG states) is written every
``checkpoint_every`` steps and a rerun resumes from it exactly; the end writes ``out_dir/final/``.
Run: ``python -m owlens.toyworld.train_owl OUT_DIR [--steps N] [--seed S]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from owlens.persist import load_state, save_state
from owlens.schedules import warmup_cosine
from owlens.toyworld.checkpointing import CHECKPOINT_NAME, refuse_legacy_checkpoint
from owlens.toyworld.owl_ap import evaluate_ap50
from owlens.toyworld.owl_forward import detect, query_tokens
from owlens.toyworld.owl_loss import QUERIES, owl_loss, scene_targets
from owlens.toyworld.tokenizer import build_tokenizer
from owlens.toyworld.world import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, PATCH_SIZE, sample_scene, to_pixel_values

__all__ = [
    "DEFAULT_STEPS",
    "ONE_TO_ONE_FROM",
    "QUERIES",
    "build_image_processor",
    "build_model",
    "detect",
    "evaluate_ap50",
    "owl_loss",
    "query_tokens",
    "reinit_heads",
    "scene_targets",
    "train",
]


DEFAULT_STEPS = 2000
# Dense labels first (every inside patch: learns features and boxes fast), then one patch per object
# (OWL-ViT's own bipartite matching): dense labels alone leave 3-6 near-equal duplicates per object, which
# VOC AP counts as false positives (held-out mAP50 0.45 at step 1,750; 100 one-to-one steps took it to 0.94).
ONE_TO_ONE_FROM = 1500
BATCH_SIZE = 64
LR = 1e-3
WEIGHT_DECAY = 1e-4
WARMUP_STEPS = 100
CHECKPOINT_EVERY = 250
_CKPT = CHECKPOINT_NAME


def build_model(tokenizer, seed: int = 0):
    """A fresh 0.72M-parameter OWL-ViT for 64x64 images (8x8 patches), heads re-initialised."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    config = OwlViTConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        ),
        projection_dim=64,
    )
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(config)
    reinit_heads(model)
    return model


@torch.no_grad()
def reinit_heads(model) -> None:
    """Give the detection heads a trainable start.

    transformers leaves the class and box heads at N(0, 1): the box sigmoid saturates, the box loss
    stays flat and AP is exactly 0, silently (docs/design.md §6). Hidden layers get PyTorch's default init;
    the last box layer starts near 0 so that the first boxes are the grid prior (a patch-sized box per patch);
    logits start near (cos - 1) · 5, a low prior as focal losses want.
    """
    for layer in (model.class_head.dense0, model.box_head.dense0, model.box_head.dense1):
        layer.reset_parameters()
    torch.nn.init.normal_(model.box_head.dense2.weight, std=1e-3)
    torch.nn.init.zeros_(model.box_head.dense2.bias)
    for layer, bias in ((model.class_head.logit_shift, -1.0), (model.class_head.logit_scale, 4.0)):
        torch.nn.init.normal_(layer.weight, std=1e-3)
        torch.nn.init.constant_(layer.bias, bias)


def build_image_processor():
    """OwlViTImageProcessor for 64x64 without centre crop: same numbers as ``world.to_pixel_values``."""
    from transformers import OwlViTImageProcessor

    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    return OwlViTImageProcessor(
        size=size, crop_size=size, do_center_crop=False, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    )


def train(
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    log: Callable[[str], None] = print,
    batch_size: int = BATCH_SIZE,
    checkpoint_every: int = CHECKPOINT_EVERY,
    stop_after: int | None = None,
    one_to_one_from: int = ONE_TO_ONE_FROM,
) -> Path:
    """Train (or resume) into ``out_dir``; returns ``out_dir/final`` (or the checkpoint if stopped early).

    ``stop_after`` ends the run at that step with a checkpoint, as a kill after it would (for staging and
    the resume test). A rerun with the same arguments continues bit-for-bit from the last checkpoint.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = warmup_cosine(optimizer, steps, WARMUP_STEPS)
    rng = np.random.default_rng(seed)
    meta = {"steps": steps, "seed": seed, "batch": batch_size, "one_to_one_from": one_to_one_from}
    step = _resume(out_dir / _CKPT, model, optimizer, scheduler, rng, **meta)
    if step:
        log(f"resumed from {out_dir / _CKPT} at step {step}")
    query_ids, query_mask = query_tokens(tokenizer)
    end = steps if stop_after is None else min(steps, stop_after)
    model.train()
    t0 = time.time()
    while step < end:
        scenes = [sample_scene(rng, prior=True) for _ in range(batch_size)]
        pixel_values = to_pixel_values(np.stack([s.image for s in scenes]))  # (B, 3, 64, 64)
        logits, boxes = detect(model, query_ids, query_mask, pixel_values)
        loss, parts = owl_loss(logits, boxes, scene_targets(scenes), one_to_one=step >= one_to_one_from)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % 50 == 0 or step == end:
            parts_text = " ".join(f"{k} {v:.4f}" for k, v in parts.items())
            lr, secs = scheduler.get_last_lr()[0], time.time() - t0
            log(f"step {step}/{steps} loss {loss.item():.4f} {parts_text} lr {lr:.2e} {secs:.0f} s")
        if step % checkpoint_every == 0 or step == end:
            _save(out_dir / _CKPT, model, optimizer, scheduler, rng, step=step, **meta)
    if step < steps:
        return out_dir / _CKPT
    final = out_dir / "final"
    model.eval()
    model.save_pretrained(final, safe_serialization=True)
    tokenizer.save_pretrained(final)
    build_image_processor().save_pretrained(final)
    log(f"wrote {final}")
    return final


def _save(path: Path, model, optimizer, scheduler, rng, **meta) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **meta,
    }
    save_state(path, state)  # atomic: a kill mid-write never leaves a broken checkpoint


def _resume(path: Path, model, optimizer, scheduler, rng, **expected) -> int:
    refuse_legacy_checkpoint(path.parent)
    if not path.exists():
        return 0
    state = load_state(path)
    got = {k: state.get(k) for k in expected}
    if got != expected:
        raise ValueError(
            f"checkpoint {path} was written with {got}, this run asks for {expected}; "
            "use the same arguments or another out_dir"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train the toy OWL-ViT detector (staged, resumable).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.out_dir, seed=args.seed, steps=args.steps, log=lambda m: print(m, flush=True))
