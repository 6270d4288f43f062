"""Apply a plan to a model: every method in its fixed order (prune first)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from autocompress.compress.prune import prune_channels
from autocompress.config import Plan


def apply(
    model: nn.Module,
    plan: Plan,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    inplace: bool = False,
) -> nn.Module:
    """Build the compressed model a plan describes.

    Args:
        model: the dense model.
        plan: per-layer settings; layers it does not name stay as they are.
        example_input: one input batch (tensor or tuple), used to trace layer dependencies.
        inplace: modify `model` itself instead of a deep copy.

    Returns:
        The compressed model, in the training mode `model` was in.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    target = model if inplace else copy.deepcopy(model)
    prune_channels(target, plan, inputs)
    return target
