"""W by feature distillation: MSE between W(E[:, 1:]) and the MLLM's own projected image
tokens for the same image; images only; OWL and the MLLM frozen. Paper defaults: AdamW, lr 1e-4, weight
decay 1e-2, batch 16, one epoch.

Runs under Hugging Face accelerate (one process, or `accelerate launch` for several GPUs); the batch size is
the global batch (``split_batches``), so the paper's 16 stays 16 whatever the number of processes. A
checkpoint is written every ``checkpoint_every`` steps; rerunning with the same ``out_dir`` resumes exactly
where the last checkpoint left off, provided the weights, the image files and the settings are those of the
run that wrote it (``fingerprint.json``). One run at a time holds ``out_dir``.

The checkpoint swap never loses the last good checkpoint: the new one is written to ``checkpoint.partial``
(its trainer_state.json last, marking it complete), the old one is renamed aside to ``checkpoint.old``, the
new one renamed into place, and only then is the old one deleted. A kill anywhere in between leaves one
complete checkpoint among the three names, and ``_recover`` puts the newest complete one back in place.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from owlens.align.data import ImageFolder, collate
from owlens.explain._borrow import frozen
from owlens.persist.atomic import atomic_write_json
from owlens.persist.fingerprint import FINGERPRINT, Fingerprint, claim, image_listing, model_weights
from owlens.persist.lock import folder_lock
from owlens.persist.state import load_state, save_state
from owlens.schedules import warmup_cosine

__all__ = ["AlignConfig", "AlignResult", "train_alignment", "CHECKPOINT", "PROJECTOR"]

CHECKPOINT, PROJECTOR, STATE, RESULT = "checkpoint", "projector", "trainer_state.json", "result.json"
PARTIAL, OLD = CHECKPOINT + ".partial", CHECKPOINT + ".old"
# W, optimizer, scheduler (and the fp16 loss scaler) in one safetensors file: accelerate's own save_state
# pickles the optimizer and RNG states, and loading a pickle from a run folder can run code from it.
TRAINING_STATE = "training.safetensors"
# Settings a resumed run must share with the run that wrote the checkpoint, or the result is not one run.
_RESUME_KEYS = ("lr", "weight_decay", "batch_size", "epochs", "seed", "schedule")
_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class AlignConfig:
    lr: float = 1e-4  # paper
    weight_decay: float = 1e-2  # paper
    batch_size: int = 16  # paper; the global batch across processes
    epochs: int = 1  # paper
    seed: int = 0  # fixes the image order of every epoch
    checkpoint_every: int = 200  # steps between checkpoints
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    schedule: str = "constant"  # the paper states none; "cosine" decays to 0 over the run after 3% warm-up
    mixed_precision: str = "no"  # "bf16" for autocast under accelerate
    num_workers: int = 0  # image-decoding workers of the DataLoader


@dataclass(frozen=True)
class AlignResult:
    """What a run did. ``projector_dir`` holds W once all epochs are done, else None (stopped early)."""

    projector_dir: Path | None
    steps: int
    images_used: int
    images_skipped: int
    last_loss: float
    resumed_from_step: int
    processes: int  # how many accelerate processes shared each global batch
    rank: int  # this process's index among them (0 writes the files)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _scheduler(optimizer, schedule: str, total_steps: int):
    if schedule not in _SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: expected one of {_SCHEDULES}")
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return warmup_cosine(optimizer, total_steps, warmup=max(1, round(0.03 * total_steps)))


class _EpochOrder(torch.utils.data.Sampler):
    """A fixed permutation per (seed, epoch): the same order again after a resume."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _swap_step(step: str) -> None:
    """Called between the steps of the checkpoint swap; tests replace it to kill the run inside the window."""


_swap_hook: Callable[[str], None] = _swap_step


def _complete(folder: Path) -> bool:
    return (folder / STATE).is_file()


def _recover(out_dir: Path) -> None:
    """Put the newest complete checkpoint at ``checkpoint/`` after a kill inside the swap; drop the rest.

    In swap order: a complete ``checkpoint.partial`` with no ``checkpoint`` was about to be renamed in (it is
    the newest); otherwise ``checkpoint.old`` is the last good one. A ``checkpoint.partial`` left beside a
    ``checkpoint`` was never finished, or is older news: deleted, as is a leftover ``checkpoint.old``.
    """
    final, partial, old = out_dir / CHECKPOINT, out_dir / PARTIAL, out_dir / OLD
    if not final.exists():
        if partial.exists() and _complete(partial):
            partial.rename(final)
        elif old.exists() and _complete(old):
            old.rename(final)
    for leftover in (partial, old):
        if leftover.exists():
            shutil.rmtree(leftover)


def _read_state(out_dir: Path, config: AlignConfig) -> dict:
    path = out_dir / CHECKPOINT / STATE
    if not path.is_file():
        return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "used": 0, "skipped": 0, "loss": float("nan")}
    state = json.loads(path.read_text())
    stored, current = state["config"], asdict(config)
    changed = {k: (stored[k], current[k]) for k in _RESUME_KEYS if stored[k] != current[k]}
    if changed:
        raise ValueError(f"{out_dir} holds a checkpoint made with other settings (stored, now): {changed}; "
                         "use a fresh --out folder, or the same settings to resume")
    return state


def _training_state(accelerator, parts) -> dict:
    projector, optimizer, scheduler = parts
    state = {"projector": accelerator.unwrap_model(projector).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}
    if accelerator.scaler is not None:
        state["scaler"] = accelerator.scaler.state_dict()
    return state


def _restore(accelerator, folder: Path, parts) -> None:
    """Load W, optimizer and scheduler state from a checkpoint folder, on every process (DDP keeps them equal)."""
    path = folder / TRAINING_STATE
    if not path.is_file():
        raise ValueError(f"{folder} holds a checkpoint in accelerate's pickle format (owlens 0.1); it is not loaded "
                         "because unpickling a file can run code from it. Delete it to train from step 0, or pass "
                         "another --out")
    projector, optimizer, scheduler = parts
    state = load_state(path)
    accelerator.unwrap_model(projector).load_state_dict(state["projector"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])


def _save_checkpoint(accelerator, out_dir: Path, state: dict, config: AlignConfig, parts) -> None:
    """Write the new checkpoint, then swap it in without a moment where no complete one exists."""
    partial, final, old = out_dir / PARTIAL, out_dir / CHECKPOINT, out_dir / OLD
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partial.mkdir(parents=True)
        save_state(partial / TRAINING_STATE, _training_state(accelerator, parts))
        _swap_hook("written")
        atomic_write_json(partial / STATE, {**state, "config": asdict(config)}, durable=True)  # marks it complete
        _swap_hook("complete")
        if final.exists():
            final.rename(old)
            _swap_hook("aside")
        partial.rename(final)
        _swap_hook("in-place")
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _fingerprint(model, images: Sequence, config: AlignConfig) -> Fingerprint:
    """The frozen models, the image files and the settings.

    Only a list of paths has files to vouch for; in-memory images and generated datasets (the toy world's
    scenes, which would be rendered to be listed) are left to the settings and the caller.
    """
    listed = isinstance(images, (list, tuple))
    files = [image for image in images if isinstance(image, (str, Path))] if listed else []
    return Fingerprint(weights=model_weights(model), inputs={"images": image_listing(files)},
                       settings={k: v for k, v in asdict(config).items() if k in _RESUME_KEYS})


def _batch_loss(model, projector, batch: dict) -> torch.Tensor:
    if "owl_pixels" not in batch:  # every image of this shard was unreadable: a zero loss keeps ranks in step
        return sum(p.sum() for p in projector.parameters()) * 0.0
    with torch.no_grad():
        embedding = model.encode(batch["owl_pixels"])  # (B, 1+N, d_owl)
        target = model.language.own_image_tokens(batch["mllm_pixels"])  # (B, N, D_lm)
    prediction = projector(embedding[:, 1:].to(next(projector.parameters()).dtype))  # (B, N, D_lm)
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def train_alignment(model, images: Sequence, out_dir: str | Path, config: AlignConfig = AlignConfig(), *,
                    progress: bool = True, log=print) -> AlignResult:
    """Train ``model.alignment`` on ``images`` (paths, PIL images or uint8 arrays); W is written to
    ``out_dir/projector`` when the last epoch ends. OWL and the MLLM are frozen for the run and given back."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from tqdm.auto import tqdm

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: expected a folder; received the file {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    # split_batches: each global batch is cut across processes (the Accelerator's own keyword is ignored).
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=model.device.type == "cpu",
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    loader = torch.utils.data.DataLoader(ImageFolder(images, model.processor), batch_size=config.batch_size,
                                         sampler=_EpochOrder(len(images), config.seed), collate_fn=collate,
                                         num_workers=config.num_workers)
    locks = ExitStack()
    locks.enter_context(frozen(model.owl, model.llava))  # given back last: after the lock is released
    try:
        if accelerator.is_main_process:  # one launch holds the folder; its other processes share the lock
            locks.enter_context(folder_lock(out_dir))
            _recover(out_dir)
            claim(out_dir / FINGERPRINT, _fingerprint(model, images, config))
        accelerator.wait_for_everyone()
        model.to(accelerator.device)
        optimizer = torch.optim.AdamW(model.alignment.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = _scheduler(optimizer, config.schedule, config.epochs * math.ceil(len(images) / config.batch_size))
        projector, optimizer, loader, scheduler = accelerator.prepare(model.alignment, optimizer, loader, scheduler)
        state = _read_state(out_dir, config)
        if state["step"]:
            _restore(accelerator, out_dir / CHECKPOINT, (projector, optimizer, scheduler))
            log(f"resuming from step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})")
        resumed_from = state["step"]
        total = config.epochs * len(loader) if config.max_steps is None else min(config.max_steps,
                                                                                 config.epochs * len(loader))
        bar = tqdm(total=total, initial=state["step"], disable=not (progress and accelerator.is_main_process),
                   desc="align W", unit="step")
        _run_epochs(model, projector, (optimizer, scheduler), loader, accelerator, state, config, out_dir, bar)
        bar.close()
        projector_dir = None
        if state["epoch"] >= config.epochs:
            projector_dir = out_dir / PROJECTOR
            if accelerator.is_main_process:
                accelerator.unwrap_model(projector).save_pretrained(projector_dir)
            accelerator.wait_for_everyone()
        result = AlignResult(projector_dir, state["step"], state["used"], state["skipped"], state["loss"],
                             resumed_from, accelerator.num_processes, accelerator.process_index)
        if accelerator.is_main_process:  # one writer: every process holds the same result
            atomic_write_json(out_dir / RESULT, result.to_dict())
        return result
    finally:
        locks.close()


def _run_epochs(model, projector, optimizers, loader, accelerator, state, config, out_dir, bar) -> None:
    """Train from ``state`` on, until the last epoch ends or ``max_steps`` is reached; checkpoint at the end."""
    optimizer, scheduler = optimizers
    def reached() -> bool:
        return config.max_steps is not None and state["step"] >= config.max_steps

    for epoch in range(state["epoch"], config.epochs):
        if reached():
            break
        loader.set_epoch(epoch)
        skip = state["batch_in_epoch"]
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            loss = _batch_loss(model, projector, batch)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            used = torch.tensor(batch["owl_pixels"].shape[0] if "owl_pixels" in batch else 0)
            counts = accelerator.reduce(torch.stack([used, batch["skipped"]]).to(accelerator.device), "sum")
            state.update(step=state["step"] + 1, batch_in_epoch=state["batch_in_epoch"] + 1,
                         loss=float(accelerator.reduce(loss.detach(), "mean")),
                         used=state["used"] + int(counts[0]), skipped=state["skipped"] + int(counts[1]))
            bar.update(1)
            bar.set_postfix(loss=f"{state['loss']:.4g}", skipped=state["skipped"])
            if state["batch_in_epoch"] == len(loader):
                state.update(epoch=epoch + 1, batch_in_epoch=0)
            if reached():
                break
            if state["step"] % config.checkpoint_every == 0:
                _save_checkpoint(accelerator, out_dir, state, config, (projector, optimizer, scheduler))
    _save_checkpoint(accelerator, out_dir, state, config, (projector, optimizer, scheduler))
