"""Borrowed model state, returned on the way out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["borrowed"]


@contextmanager
def borrowed(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters inside; each module's mode and each parameter's ``requires_grad`` restored.

    Explainers differentiate with respect to E only: frozen weights keep the backward from computing weight
    gradients, and eval mode turns dropout off so that an explanation is repeatable.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
