"""Stage checkpoints for the toy-world trainers: save everything a stage needs to resume exactly.

A stage writes ``<stage_dir>/checkpoint.safetensors`` holding the trainable modules, optimizer, scheduler, step
and torch RNG state, without pickle (``owlens.persist.state``): resuming from a folder never runs code from it.
Training data are drawn from generators seeded by ``(seed, stage, step)``, so the data stream needs no saved
state and a resumed run replays the uninterrupted one bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from owlens.persist import load_state, save_state
from owlens.schedules import warmup_cosine  # re-exported: the stages' schedule, with floor=0.1

__all__ = [
    "CHECKPOINT_NAME",
    "LegacyCheckpointError",
    "StageState",
    "load_checkpoint",
    "refuse_legacy_checkpoint",
    "run_stage",
    "save_checkpoint",
    "step_rng",
    "warmup_cosine",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
_LEGACY_NAME = "checkpoint.pt"  # the pickle format of owlens 0.1, never loaded


class LegacyCheckpointError(RuntimeError):
    """A stage folder holds a pickle checkpoint, which owlens refuses to unpickle."""


def refuse_legacy_checkpoint(stage_dir: Path) -> None:
    """Raise when ``stage_dir`` holds only an old pickle checkpoint: unpickling it could run any code in it."""
    legacy = Path(stage_dir) / _LEGACY_NAME
    if legacy.exists() and not (Path(stage_dir) / CHECKPOINT_NAME).exists():
        raise LegacyCheckpointError(
            f"{legacy} is a pickle checkpoint (owlens 0.1); it is not loaded because unpickling a file can run code "
            f"from it. Delete it to retrain this stage from step 0, or pass another --out")


@dataclass
class StageState:
    """The mutable state of one training stage (what ``save_checkpoint`` writes)."""

    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0


def step_rng(seed: int, stage: str, step: int):
    """The numpy generator for one step's data: a pure function of (seed, stage, step)."""
    import zlib

    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(stage.encode()), step])


def save_checkpoint(stage_dir: Path, state: StageState) -> Path:
    """Write the checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "modules": {k: m.state_dict() for k, m in state.modules.items()},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "torch_rng": torch.get_rng_state(),
    }
    return save_state(stage_dir / CHECKPOINT_NAME, payload)


def load_checkpoint(stage_dir: Path, state: StageState) -> bool:
    """Restore ``state`` in place from ``stage_dir`` if a checkpoint is there; return whether it was."""
    refuse_legacy_checkpoint(stage_dir)
    path = stage_dir / CHECKPOINT_NAME
    if not path.exists():
        return False
    payload = load_state(path)
    for k, m in state.modules.items():
        m.load_state_dict(payload["modules"][k])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    state.step = int(payload["step"])
    torch.set_rng_state(payload["torch_rng"])
    return True


def run_stage(stage_dir: Path, state: StageState, loss_fn, *, steps: int, until: int | None = None,
              checkpoint_every: int = 200, log_every: int = 50, log=print, name: str = "") -> bool:
    """Resume ``state`` from ``stage_dir`` and train to ``steps`` (or pause after ``until``).

    ``loss_fn(step) -> (loss, metrics dict)`` computes one step's loss from data drawn for that step.
    Returns True when the stage reached ``steps``. A checkpoint is written every ``checkpoint_every``
    steps and whenever the loop stops, so rerunning after a kill loses at most that many steps.
    """
    import time

    if load_checkpoint(stage_dir, state):
        log(f"[{name}] resumed at step {state.step}/{steps}")
    stop = steps if until is None else min(steps, until)
    params = [p for m in state.modules.values() for p in m.parameters() if p.requires_grad]
    t0, seen = time.perf_counter(), 0
    while state.step < stop:
        loss, metrics = loss_fn(state.step)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        state.optimizer.step()
        state.scheduler.step()
        state.step += 1
        seen += 1
        if state.step % log_every == 0 or state.step == stop:
            rate = (time.perf_counter() - t0) / seen
            parts = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            log(f"[{name}] step {state.step}/{steps} loss {loss.item():.4f} {parts} ({rate:.3f} s/step)")
        if state.step % checkpoint_every == 0 or state.step == stop:
            save_checkpoint(stage_dir, state)
    return state.step >= steps
