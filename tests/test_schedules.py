"""Every trainer's learning rates are bit-identical to the schedules each trainer wrote for itself before
``owlens.schedules`` (the literal copies below), so the shipped toy weights' recipe is unchanged."""

import math

import pytest
import torch

from owlens.align.trainer import _scheduler
from owlens.schedules import warmup_cosine
from owlens.toyworld.train_owl import DEFAULT_STEPS, WARMUP_STEPS


def _align_before(step, total_steps):  # align/trainer.py, schedule="cosine"
    warmup = max(1, round(0.03 * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))


def _owl_before(step, steps):  # toyworld/train_owl.py
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS))))


def _stage_before(step, steps, warmup):  # toyworld/checkpointing.py: the tower and LLaVA stages
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t))


def _rates(scheduler, n):
    rates = []
    for _ in range(n):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def _optimizer(lr):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


CASES = [
    *[(f"align cosine {t}", lambda o, t=t: _scheduler(o, "cosine", t), lambda s, t=t: _align_before(s, t), t)
      for t in (1, 7, 16, 100, 157, 1000)],
    ("align constant", lambda o: _scheduler(o, "constant", 50), lambda s: 1.0, 50),
    *[(f"owl {n}", lambda o, n=n: warmup_cosine(o, n, WARMUP_STEPS), lambda s, n=n: _owl_before(s, n), n)
      for n in (5, 150, DEFAULT_STEPS)],
    *[(f"tower {n}", lambda o, n=n: warmup_cosine(o, n, warmup=min(100, n), floor=0.1),
       lambda s, n=n: _stage_before(s, n, min(100, n)), n) for n in (3, 400, 3000)],
    *[(f"llava {n}", lambda o, n=n: warmup_cosine(o, n, warmup=min(200, n), floor=0.1),
       lambda s, n=n: _stage_before(s, n, min(200, n)), n) for n in (10, 1000, 4000)],
]


@pytest.mark.parametrize(("name", "build", "before", "steps"), CASES, ids=[c[0] for c in CASES])
def test_learning_rates_bit_identical_to_each_trainer_s_former_schedule(name, build, before, steps):
    lr = 2e-3
    optimizer = _optimizer(lr)
    # a few steps past the end too: the schedule must stay at its floor, not come back up
    got = _rates(build(optimizer), steps + 5)
    assert got == [lr * before(step) for step in range(steps + 5)], name


def test_bad_warmup_or_floor_says_what_was_expected():
    with pytest.raises(ValueError, match="expected warmup >= 1 and 0 <= floor < 1; received warmup=0"):
        warmup_cosine(_optimizer(1.0), 10, 0)
    with pytest.raises(ValueError, match="floor=1"):
        warmup_cosine(_optimizer(1.0), 10, 1, floor=1)
