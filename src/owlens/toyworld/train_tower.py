"""Stage 0 of the toy LLaVA: pretrain its CLIP vision tower with dense per-patch supervision.

The feasibility prototype (notes/toyworld-prototype.md) found that a tower trained end to end through the
LM sits at chance for ~1,200 steps, while a tower pretrained to name the object under every patch lets
the LM bind colour to shape. Linear heads read the tower's layer -2 patch tokens (what LLaVA feeds its
projector, ``vision_feature_layer=-2``) and predict, for each of the 8x8 patches, the colour, shape, size
and colour x shape of the object covering it (or background); a presence head max-pools the colour x shape
and shape logits over patches and is trained against the scene's multi-hot labels, the task the LM later
has to solve. The heads are discarded; only the ``CLIPVisionModel`` is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from owlens.toyworld.checkpointing import StageState, run_stage, step_rng, warmup_cosine
from owlens.toyworld.world import COLOURS, GRID, PATCH_SIZE, SHAPES, SIZES, sample_scene, to_pixel_values

__all__ = [
    "MIN_PATCH_PIXELS",
    "PatchTargets",
    "patch_targets",
    "sincos_positions",
    "train",
    "vision_config",
]

# An object labels a patch when it covers at least this many of its 64 pixels: small stars and
# triangles (12 px) may miss every patch centre, so "object under the centre" would drop them.
MIN_PATCH_PIXELS = 6


def vision_config():
    """The tower: 64x64 images, patch 8 (64 patches + CLS), 128-d, 5 layers (layer -2 = 4 layers deep)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=64, patch_size=8, hidden_size=128, intermediate_size=512,
        num_hidden_layers=5, num_attention_heads=4, projection_dim=128,
    )


def sincos_positions(d: int, grid: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings (1 + grid*grid, d), a zero row for CLS (as MAE initialises).

    Why: CLIP's learnt positions start at N(0, 0.02), far below the patch content, so attention cannot
    find a patch's neighbours and shape (which spans 2-3 patches) stays at chance for hundreds of steps.
    """
    q = d // 4
    omega = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / q))  # (q,)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        angle = coord[:, None] * omega[None]  # (grid*grid, q)
        parts += [angle.sin(), angle.cos()]
    return torch.cat([torch.zeros(1, d), torch.cat(parts, 1)])  # (1 + grid*grid, d)


class PatchTargets(dict):
    """Per-patch class ids (B, 64), 0 = background: ``colour`` 0..5, ``shape`` 0..5, ``size`` 0..2,
    ``conj`` 0..25 (colour x shape); scene multi-hot ``present`` (B, 30) float (25 conj then 5 shapes)."""


def patch_targets(scenes) -> PatchTargets:
    b, n = len(scenes), GRID * GRID
    out = {k: np.zeros((b, n), np.int64) for k in ("colour", "shape", "size", "conj")}
    present = np.zeros((b, len(COLOURS) * len(SHAPES) + len(SHAPES)), np.float32)
    for i, scene in enumerate(scenes):
        masks = np.stack([o.mask for o in scene.objects])  # (n_obj, 64, 64)
        counts = masks.reshape(len(masks), GRID, PATCH_SIZE, GRID, PATCH_SIZE).sum((2, 4)).reshape(len(masks), n)
        owner = counts.argmax(0)  # (64,) the object covering most of each patch
        covered = counts.max(0) >= MIN_PATCH_PIXELS
        for j, obj in enumerate(scene.objects):
            sel = covered & (owner == j)
            c, s = COLOURS.index(obj.colour), SHAPES.index(obj.shape)
            out["colour"][i, sel] = c + 1
            out["shape"][i, sel] = s + 1
            out["size"][i, sel] = SIZES.index(obj.size) + 1
            out["conj"][i, sel] = c * len(SHAPES) + s + 1
            present[i, c * len(SHAPES) + s] = 1.0
            present[i, len(COLOURS) * len(SHAPES) + s] = 1.0
    targets = PatchTargets({k: torch.from_numpy(v) for k, v in out.items()})
    targets["present"] = torch.from_numpy(present)
    return targets


class DenseHeads(nn.Module):
    """Linear read-outs of layer -2 patch tokens (B, 64, d) -> per-patch logits per target."""

    sizes = {"colour": 6, "shape": 6, "size": 3, "conj": 26, "present": 30}

    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.heads = nn.ModuleDict({k: nn.Linear(d, n) for k, n in self.sizes.items()})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.norm(tokens)
        return {k: head(h) for k, head in self.heads.items()}  # each (B, 64, n)


def dense_loss(tower, heads: DenseHeads, pixel_values: torch.Tensor, targets: PatchTargets):
    """Sum of the per-patch cross-entropies and the max-pooled presence BCE; also per-patch accuracies."""
    tokens = tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]  # (B, 64, d)
    logits = heads(tokens)
    loss = torch.zeros(())
    metrics = {}
    for k in ("colour", "shape", "size", "conj"):
        loss = loss + nn.functional.cross_entropy(logits[k].flatten(0, 1), targets[k].flatten())
        on_object = targets[k] > 0
        metrics[f"acc_{k}"] = (logits[k].argmax(-1) == targets[k])[on_object].float().mean().item()
    pooled = logits["present"].amax(1)  # (B, 30): "is it anywhere?" as the LM will be asked
    loss = loss + nn.functional.binary_cross_entropy_with_logits(pooled, targets["present"])
    metrics["acc_present"] = ((pooled > 0).float() == targets["present"]).float().mean().item()
    return loss, metrics


def train(out_dir: Path, *, seed: int = 0, steps: int = 3000, batch_size: int = 32, lr: float = 1e-3,
          until: int | None = None, log=print) -> Path:
    """Train the tower (resumable) and write ``out_dir/tower`` (``CLIPVisionModel.save_pretrained``).

    ``until`` pauses after that step (a checkpoint is kept); rerunning continues exactly.
    Returns the tower directory, or the stage directory when paused.
    """
    from transformers import CLIPVisionModel

    out_dir = Path(out_dir)
    final = out_dir / "tower"
    if (final / "config.json").exists():
        return final
    torch.manual_seed(seed)
    tower = CLIPVisionModel(vision_config())
    with torch.no_grad():
        emb = tower.embeddings.position_embedding.weight  # (65, d)
        emb.copy_(0.5 * sincos_positions(emb.shape[1], tower.config.image_size // tower.config.patch_size))
    heads = DenseHeads(tower.config.hidden_size)
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    state = StageState({"tower": tower, "heads": heads}, optimizer,
                       warmup_cosine(optimizer, steps, warmup=min(100, steps), floor=0.1))

    def loss_fn(step: int):
        rng = step_rng(seed, "tower", step)
        scenes = [sample_scene(rng, prior=True) for _ in range(batch_size)]
        images = np.stack([s.image for s in scenes])
        return dense_loss(tower, heads, to_pixel_values(images), patch_targets(scenes))

    stage_dir = out_dir / "stage_tower"
    if not run_stage(stage_dir, state, loss_fn, steps=steps, until=until, log=log, name="tower"):
        return stage_dir
    tower.save_pretrained(final, safe_serialization=True)
    return final
