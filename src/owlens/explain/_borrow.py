"""Borrowed model state, returned on the way out: every borrower (explainers, perturbations, the W trainer,
the toy detector's evaluation) sets modes and ``requires_grad`` here, so the restore is written once."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["borrowed", "evaluating", "frozen"]

# Models inside a ``borrowed`` block: a nested block has nothing to change and nothing to give back. Walking
# every module and parameter costs ~10 ms at the toy world's size, which an evaluation would pay per call.
_held: weakref.WeakSet = weakref.WeakSet()


@contextmanager
def _restored(modules: list[nn.Module], *, modes: bool, flags: bool) -> Iterator[None]:
    """Saves each module's ``training`` (``modes``) and each parameter's ``requires_grad`` (``flags``), then
    sets eval mode / freezes; gives each back on exit, even after an exception."""
    saved_modes = [(m, m.training) for module in modules for m in module.modules()] if modes else []
    saved_flags = [(p, p.requires_grad) for module in modules for p in module.parameters()] if flags else []
    try:
        for module, _ in saved_modes:
            module.training = False  # each module on its own: the same as .eval() on every root
        for parameter, _ in saved_flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for module, training in saved_modes:
            module.training = training
        for parameter, flag in saved_flags:
            parameter.requires_grad_(flag)


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
    with _restored([model], modes=True, flags=True):
        _held.add(model)
        try:
            yield model
        finally:
            _held.discard(model)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` frozen inside (modes untouched): the parts a trainer reads but does not train."""
    with _restored(list(modules), modes=False, flags=True):
        yield


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside (``requires_grad`` untouched), each module's mode restored: scoring a model mid-training."""
    with _restored([model], modes=True, flags=False):
        yield model
