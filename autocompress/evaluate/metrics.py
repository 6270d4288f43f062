"""Model figures that do not need the target: parameter count, top-1 (the serialized size is
`compress.size.size_bytes`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


def param_count(model: nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def top1(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy as a fraction in [0, 1] over `(x, y)` batches (x a tuple: the model's
    positional arguments).

    The model is evaluated in eval mode; its previous mode is restored afterwards.

    Raises:
        ValueError: the loader yielded no samples.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            out = model(*x) if isinstance(x, tuple | list) else model(x)
            correct += int((out.argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("the validation loader yielded no samples")
    return correct / total
