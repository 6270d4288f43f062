"""The one module-swap helper every transform uses, name resolution for planned layers, and
baking a parametrized weight."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

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


def bake_weight(module: nn.Module) -> None:
    """Make a parametrized `weight` a plain Parameter holding its effective value, in place:
    `remove_parametrizations(leave_parametrized=True)` without touching the shared class.

    `copy.deepcopy` keeps a parametrized module's generated class, and torch's removal deletes
    the `weight` property from that class: baking a copy would break the original. So the
    module is switched back to its plain class and given the effective weight directly.
    """
    if set(module.parametrizations) != {"weight"}:  # other tensors parametrized: torch's way
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return
    with torch.no_grad():
        effective = module.weight.detach().clone()
    requires_grad = module.parametrizations["weight"].original.requires_grad
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]
    module.weight = nn.Parameter(effective, requires_grad=requires_grad)
