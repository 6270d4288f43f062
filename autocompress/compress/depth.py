"""Depth pruning: drop whole blocks, so their kernels leave the graph.

Why: on the runtime targets a batch-1 int8 graph spends most of its time in the int8
convolutions themselves, each a kernel launch with a fixed cost (ONNX Runtime's profiler on
digits-resnet at keep 0.62 + int8: 21 `QLinearConv` nodes are 61% of the run;
`reports/benchmarks/runtimes.md`), so thinner channels buy little. A dropped block removes
its convolutions and its add outright. In a transformer, about a third of an encoder layer's
time is in ops no pruning shrinks (layer norms, masking, reshapes, softmax: 3.5 of 10.5 ms in
all-MiniLM-L6-v2's plain ORT int8 graph), which only removing the layer removes.

Which blocks, checked on the model's real input, not on the class:
- Residual blocks: a module that computes `x + f(x)` (or an activation that passes `x`
  unchanged, like `relu(x + f(x))` after a ReLU) on its own input. With all of the block's
  parameters set to zero, `f` gives zero and the block must return its input exactly.
  Blocks whose shortcut is a projection (a strided or widening 1x1 conv) fail the check and
  are never dropped. Pre-LayerNorm transformer layers pass it too.
- Layers of a stack: an entry of an `nn.ModuleList` whose entries are all of one class (a
  transformer's encoder layers, which its forward loops over), whose output is one tensor
  of its first input's shape. A post-LayerNorm layer (BERT's) is no identity when zeroed,
  but the loop runs the same without it; the fine-tune recovers what it computed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.compress._swap import COMPRESSIBLE, swap_module
from autocompress.compress.method import (
    Applying,
    KernelEffect,
    Method,
    Offers,
    Values,
    register,
)
from autocompress.config import LayerConfig, Plan, Setting

Inputs = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class _Call:
    """A submodule's first call: its first positional input (copied before its forward, which
    may change it in place), whether that was its only argument, and its output."""

    input: torch.Tensor
    alone: bool
    output: torch.Tensor


def _capture(model: nn.Module, example_input: Inputs) -> dict[str, _Call]:
    """Each submodule's first call with `example_input` whose first positional argument and
    output are tensors."""
    inputs: dict[str, tuple[torch.Tensor, bool]] = {}
    seen: dict[str, _Call] = {}
    hooks = []
    for name, module in model.named_modules():
        if not name or _has_no_kernel(module):
            continue

        def before(mod: nn.Module, args: tuple, name: str = name) -> None:
            if name not in inputs and args and isinstance(args[0], torch.Tensor):
                alone = len(args) == 1
                inputs[name] = (args[0].detach().clone(), alone)

        def after(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            if name in inputs and name not in seen and isinstance(out, torch.Tensor):
                seen[name] = _Call(*inputs[name], out.detach())

        hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.no_grad():
            model(*(example_input if isinstance(example_input, tuple) else (example_input,)))
    finally:
        for h in hooks:
            h.remove()
    return seen


def _has_no_kernel(module: nn.Module) -> bool:
    """No Conv/Linear inside (BatchNorm alone, an activation): nothing to drop."""
    return not any(isinstance(m, COMPRESSIBLE) for m in module.modules())


def _is_identity_when_zeroed(module: nn.Module, x: torch.Tensor) -> bool:
    zeroed = copy.deepcopy(module).eval()
    with torch.no_grad():
        for p in zeroed.parameters():
            p.zero_()
        try:
            out = zeroed(x.clone())
        except Exception:  # it needs more than its input (a mask, a state): not a plain block
            return False
    return isinstance(out, torch.Tensor) and out.shape == x.shape and torch.equal(out, x)


def _stacked(model: nn.Module) -> set[str]:
    """Entries of every `nn.ModuleList` of two or more entries, all of one class, that are
    not bare Conv/Linear layers themselves (a block holds layers)."""
    found = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and _blocks_of_one_class(module):
            found |= {f"{name}.{index}" if name else str(index) for index in range(len(module))}
    return found


def _blocks_of_one_class(modules: nn.ModuleList) -> bool:
    return len({type(m) for m in modules}) == 1 and not isinstance(modules[0], COMPRESSIBLE)


def droppable_blocks(model: nn.Module, example_input: Inputs) -> list[str]:
    """The blocks of `model` that can be dropped (residual blocks and layers of a stack; see
    the module's docstring), in module order.

    Args:
        model: the model (not modified; run once in eval mode on `example_input`).
        example_input: one input batch, as the model takes it.

    Returns:
        Dotted module names. A block holding smaller blocks (a ResNet stage with no
        projection, itself an identity when zeroed) is not listed; its blocks are.
    """
    was_training = model.training
    model.eval()
    try:
        captured = _capture(model, example_input)
    finally:
        model.train(was_training)
    stacked = _stacked(model)
    found = []
    for name, module in model.named_modules():
        call = captured.get(name)
        if call is None or call.output.shape != call.input.shape:
            continue
        residual = call.alone and _is_identity_when_zeroed(module, call.input)
        if residual or name in stacked:
            found.append(name)
    # Keep the innermost: drop a container only by dropping its blocks.
    return [n for n in found if not any(o.startswith(n + ".") for o in found)]


class DroppedBlock(nn.Module):
    """What a dropped block becomes: its input, unchanged. Extra arguments a model passes its
    blocks (EfficientNet's `drop_connect_rate`, a transformer layer's attention mask) are
    taken and ignored."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """Return `x`."""
        return x


def drop_blocks(model: nn.Module, names: Iterable[str]) -> None:
    """Replace each named block with a `DroppedBlock` (in place)."""
    for name in names:
        swap_module(model, name, DroppedBlock())


def _check_drop(value: Any) -> str | None:
    if not isinstance(value, bool):
        return f"drop_block must be true or false, got {value!r}"
    return None


@register
class Depth(Method):
    """Depth pruning. Knob `drop_block`: true drops the layer's block (a residual block or a
    layer of a stack) whole, decided once per block: every layer of it carries the same
    value; false = off."""

    name = "depth"
    stage = 5  # first: the later stages see the blocks that remain
    warm_start = 5
    settings = (Setting("drop_block", False, _check_drop, levels=(True,), decided_per="block"),)
    fastest: ClassVar[dict[str, Any]] = {"drop_block": max}
    smallest: ClassVar[dict[str, Any]] = {"drop_block": max}

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Drop each block whose every Conv/Linear layer the plan drops."""
        dropping = {n for n, c in plan.layers.items() if c.drop_block}
        if not dropping:
            return
        blocks = []
        for block in droppable_blocks(model, context.inputs):
            layers = [
                f"{block}.{n}"
                for n, m in model.get_submodule(block).named_modules()
                if isinstance(m, COMPRESSIBLE)
            ]
            if layers and all(name in dropping for name in layers):
                blocks.append(block)
        drop_blocks(model, blocks)

    def kernel_effect(self, cfg: LayerConfig) -> KernelEffect:
        """A dropped layer runs no kernel."""
        return KernelEffect(removed=bool(cfg.drop_block))

    def runtime_kind(self, cfg: LayerConfig) -> str | None:
        """A dropped layer is not in the graph."""
        return "dropped (with its block)" if cfg.drop_block else None

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """Every block dropped, where the space offers it."""
        return [{"drop_block": True}] if True in offers.shared.get("drop_block", []) else []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Every block dropped."""
        return [("drop blocks", level) for level in self.uniform_levels(offers)]

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'dropped x8': the layers whose blocks are dropped."""
        count = sum(1 for c in configs if c.get("drop_block", False))
        return [f"dropped x{count}"] if count else []
