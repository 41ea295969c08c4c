"""Why the toy W underfits, and what pays: W fitted on cached (E, LLaVA token) pairs (issue 3, docs/benchmarks.md).

The toy recipe's W stage renders scenes and runs both frozen models at every step; here the pairs are computed
once, so a W of any width, rate and length can be fitted in minutes and its training and held-out relative MSE
compared. Same loss (MSE), optimiser (AdamW, wd 1e-2), batch (64 images) and cosine schedule as the recipe.

    python bench/fit_alignment_cached.py --width 512 --lr 1e-3 --epochs 4 --scenes 40000 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from owlens.align.trainer import _scheduler
from owlens.models.alignment import Alignment, AlignmentConfig
from owlens.models.joint import JointModel
from owlens.toyworld.train_align import _STREAM, ToyScenes

_FIT_STREAM = 777  # a scene stream neither the recipe nor the evaluators draw from


@torch.no_grad()
def cached_pairs(model, count: int, stream: int, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """E[:, 1:] (count, N, d_owl) and LLaVA's own projected tokens (count, N, D) for ``count`` scenes, in fp16."""
    scenes, inputs, targets = ToyScenes(count, 0, stream=stream), [], []
    for start in range(0, count, batch):
        images = [scenes[i] for i in range(start, min(count, start + batch))]
        inputs.append(model.encode(model.processor.pixel_values(images))[:, 1:].half())
        targets.append(model.language.own_image_tokens(model.processor.mllm_pixel_values(images)).half())
    return torch.cat(inputs), torch.cat(targets)


@torch.no_grad()
def relative_mse(w: Alignment, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Σ‖W(E) − T‖² / Σ‖T − mean(T)‖², as ``train_align.alignment_quality`` reports it."""
    squared = sum(float(((w(inputs[i:i + 512].float()) - targets[i:i + 512].float()) ** 2).sum())
                  for i in range(0, len(inputs), 512))
    flat = targets.float().reshape(-1, targets.shape[-1])
    return squared / float(((flat - flat.mean(0)) ** 2).sum())


def fit(inputs, targets, held_in, held_out, *, width: int, lr: float, epochs: int, seed: int = 0,
        batch: int = 64, log=print) -> dict:
    torch.manual_seed(seed)
    w = Alignment(AlignmentConfig(inputs.shape[-1], targets.shape[-1], (width,) * 3, "relu"))
    steps = epochs * (len(inputs) // batch)
    optimizer = torch.optim.AdamW(w.parameters(), lr=lr, weight_decay=1e-2)
    schedule = _scheduler(optimizer, "cosine", steps)  # the recipe's own warm-up and decay
    order, curve, start = torch.Generator().manual_seed(seed), [], time.perf_counter()
    for epoch in range(epochs):
        permutation = torch.randperm(len(inputs), generator=order)
        for i in range(0, len(inputs) - batch + 1, batch):
            index = permutation[i:i + batch]
            loss = torch.nn.functional.mse_loss(w(inputs[index].float()), targets[index].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        point = {"epoch": epoch + 1, "train_relative_mse": relative_mse(w, *held_in),
                 "heldout_relative_mse": relative_mse(w, *held_out), "seconds": time.perf_counter() - start}
        log(json.dumps(point))
        curve.append(point)
    return {"width": width, "lr": lr, "epochs": epochs, "steps": steps, "scenes": len(inputs), "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512, help="width of W's three hidden layers")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=40_000, help="cached training scenes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = JointModel.from_pretrained(device="cpu", dtype="fp32")  # the shipped toy OWL and LLaVA (W is not used)
    train = cached_pairs(model, args.scenes, _FIT_STREAM)
    held_out = cached_pairs(model, 2048, _STREAM + 1)  # the stream train_align's quality check uses
    held_in = (train[0][:2048], train[1][:2048])
    result = fit(*train, held_in, held_out, width=args.width, lr=args.lr, epochs=args.epochs,
                 log=(lambda line: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
