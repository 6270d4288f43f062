"""The one module-swap helper every transform uses, and name resolution for planned layers."""

from __future__ import annotations

from collections.abc import Iterator

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
