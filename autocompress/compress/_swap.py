"""The one module-swap helper every transform uses, name resolution for planned layers, and
baking a parametrized module."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

COMPRESSIBLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Layers whose weights a plan may quantize: embedding tables too (token lookups, no kernel).
QUANTIZABLE = (*COMPRESSIBLE, nn.Embedding)


def swap_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the submodule called `name` (dotted, as in `named_modules()`) with `new`.

    Returns:
        The module that was replaced.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    setattr(parent, child, new)
    return old


def leaves(
    model: nn.Module, name: str, kinds: tuple[type[nn.Module], ...] = COMPRESSIBLE
) -> Iterator[tuple[str, nn.Module]]:
    """The Conv/Linear layers (or other `kinds`) a plan's layer name stands for now.

    The layer itself, or, once a transform turned it into a container (a factorized layer is
    an `nn.Sequential` of two), each such layer inside it.
    """
    module = model.get_submodule(name)
    if isinstance(module, kinds):
        yield name, module
        return
    for sub, child in module.named_modules():
        if sub and isinstance(child, kinds):
            yield f"{name}.{sub}", child


def bake_parametrized(module: nn.Module) -> None:
    """Make every parametrized tensor of `module` (a sparsity mask on its weight, gradual
    pruning's channel mask on its weight and bias) a plain Parameter holding its effective
    value, in place: `remove_parametrizations(leave_parametrized=True)` for each, without
    touching the shared class.

    `copy.deepcopy` keeps a parametrized module's generated class, and torch's removal deletes
    the tensor's property from that class: baking a copy would break the original. So the
    module is switched back to its plain class and given the effective tensors directly.
    """
    with torch.no_grad():
        effective = {
            name: (getattr(module, name).detach().clone(), plist.original.requires_grad)
            for name, plist in module.parametrizations.items()
        }
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]
    for name, (value, requires_grad) in effective.items():
        setattr(module, name, nn.Parameter(value, requires_grad=requires_grad))
