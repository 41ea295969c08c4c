"""Borrowed model state, returned on the way out."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["borrowed"]

# Models inside a ``borrowed`` block: a nested block has nothing to change and nothing to give back. Walking
# every module and parameter costs ~10 ms at the toy world's size, which an evaluation would pay per call.
_held: weakref.WeakSet = weakref.WeakSet()


@contextmanager
def borrowed(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters inside; each module's mode and each parameter's ``requires_grad`` restored.

    Explainers differentiate with respect to E only: frozen weights keep the backward from computing weight
    gradients, and eval mode turns dropout off so that an explanation is repeatable. Nested blocks on the same
    model are free: the outermost one sets and restores the state.
    """
    if model in _held:
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        _held.add(model)
        yield model
    finally:
        _held.discard(model)
        for module, training in modes:
            module.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
