"""The learning-rate schedule every trainer uses: linear warm-up, then a half cosine down to a floor.

Not transformers' ``get_cosine_schedule_with_warmup`` (nor its ``..._with_min_lr_...``): those warm up as
step / warmup, so the first step trains at learning rate 0, where this one warms up as (step + 1) / warmup
and the first step already moves. The toy world's shipped weights were trained with this recipe, so switching
would change it; ``tests/test_schedules.py`` pins the factors bit for bit to the trainers' former copies.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_factor", "warmup_cosine"]


def cosine_factor(step: int, *, steps: int, warmup: int, floor: float = 0.0) -> float:
    """The multiplier of the peak learning rate at ``step`` (0-based) of a run of ``steps``.

    (step + 1) / warmup for the first ``warmup`` steps, then floor + (1 − floor)·½(1 + cos πt) with t going
    from 0 to 1 over the remaining steps and staying at 1 after ``steps``. ``warmup`` ≥ 1; ``floor`` in [0, 1).
    """
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    # The product's order is the trainers' former one: (1 − floor)·0.5 first, so the floats are unchanged.
    return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int,
                  floor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping ``cosine_factor``; see there for ``steps``, ``warmup`` and ``floor``."""
    if warmup < 1 or not 0 <= floor < 1:
        raise ValueError(f"expected warmup >= 1 and 0 <= floor < 1; received warmup={warmup}, floor={floor}")

    # A plain function, not a functools.partial: LambdaLR's state_dict stores a callable object's __dict__ but
    # not a function's, and checkpoints written before this module must keep loading.
    def factor(step: int) -> float:
        return cosine_factor(step, steps=steps, warmup=warmup, floor=floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
