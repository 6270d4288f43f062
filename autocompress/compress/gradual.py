"""Gradual structured pruning (Zhu and Gupta 2017, "To prune, or not to prune"): a coupling
group's channels are removed in steps during the trial's fine-tune, along a cubic schedule,
instead of all at once before it. The prune method's knob `prune_ramp` (`compress/prune.py`)
turns it on per group: the fraction of the fine-tune over which the group reaches its
`keep_ratio`; 0 = at once.

With a ramp, the group's channels are masked, not removed: the weights and biases of its
convolutions, Linears and BatchNorms are multiplied by a 0/1 mask per output channel (a
parametrization), so a masked channel is a removed one downstream wherever the activation
maps 0 to 0 (ReLU, ReLU6, SiLU, GELU). At fine-tune step t of a ramp of n steps, with R
channels to remove, R * (1 - (1 - t / n)^3) of them are masked, the least important first
(torch-pruning's group L2 magnitude, as one-shot pruning ranks them), in 8 updates; a masked
channel stays masked. Before the fine-tune begins (and with 0 fine-tune steps) the final mask
is in place. Baking removes the masked channels for real (torch-pruning), so the latency
model, the size and the deployed model are those of the pruned plan.

A group whose channels reach a layer other than Conv, Linear and BatchNorm (a LayerNorm would
see the zeros) cannot be masked exactly, and a layer that reads a group's channels and is
factorized picks its rank from the width it sees: `why_not_ramp` says so, and the prune method
removes such a group's channels at once (a plan note).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.compress._swap import bake_parametrized
from autocompress.compress.coupling import (
    dependency_graph,
    features,
    group_importance,
    out_channel_fn,
)
from autocompress.compress.method import Schedule, attach_schedule, detach_schedules, schedules
from autocompress.config import number

UPDATES = 8  # mask updates over a ramp
_MASKED = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def check_ramp(value: Any) -> str | None:
    """Why `value` is not a `prune_ramp`, or None when it is one."""
    if not 0.0 <= number("prune_ramp", value) < 1.0:
        return f"prune_ramp must be in [0, 1), got {value}"
    return None


def cubic_removed(step: int, ramp_steps: int, total: int) -> int:
    """Channels masked after `step` of a cubic ramp of `ramp_steps` steps towards `total`,
    updated `UPDATES` times (between updates the count holds).

    Args:
        step: fine-tune steps done.
        ramp_steps: steps until every channel to remove is masked (at least 1).
        total: channels to remove.

    Returns:
        The channels masked, from 0 before the first update to `total` at the ramp's end.
    """
    if step >= ramp_steps:
        return total
    interval = max(1, ramp_steps // UPDATES)
    t = (step // interval) * interval / ramp_steps
    return math.floor(total * (1.0 - (1.0 - t) ** 3))


@dataclass(frozen=True)
class Ramp:
    """A coupling group to prune gradually.

    Args:
        leader: the group's name (its first layer).
        remove: how many of its output channels go in the end.
        ramp: the fraction of the fine-tune the ramp takes.
    """

    leader: str
    remove: int
    ramp: float


class ChannelMask(nn.Module):
    """A parametrization: a tensor's output channels (its first dimension) times a 0/1 mask.
    One instance masks every tensor of a group (weights, biases, BatchNorm scales and shifts),
    so one mask update changes them all."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, original: Tensor) -> Tensor:
        """The tensor with the masked channels zeroed."""
        shape = [-1] + [1] * (original.dim() - 1)
        return original * self.mask.to(original.dtype).view(shape)


class ChannelRamp(Schedule):
    """One coupling group pruned along the cubic schedule: its mask, and what baking needs
    to remove the masked channels.

    Args:
        ramp: the group, its channels to remove and its ramp.
        leader: the group's first layer.
        mask: the group's `ChannelMask`.
        graph: torch-pruning's dependency graph, for the importance (a copy of the model
            holds none: it can be baked, not fine-tuned).
        inputs: the example inputs, to trace the baked model.
    """

    def __init__(
        self,
        ramp: Ramp,
        *,
        leader: nn.Module,
        mask: ChannelMask,
        graph: Any,
        inputs: tuple[torch.Tensor, ...],
    ) -> None:
        self.ramp = ramp
        self.leader = leader
        self.mask = mask
        self.graph = graph
        self.inputs = inputs
        self.ramp_steps = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> ChannelRamp:
        """A copy that masks the copied model (through `memo`), without the graph."""
        twin = copy.copy(self)
        memo[id(self)] = twin
        twin.leader = copy.deepcopy(self.leader, memo)
        twin.mask = copy.deepcopy(self.mask, memo)
        twin.inputs = copy.deepcopy(self.inputs, memo)
        twin.graph = None
        return twin

    @property
    def channels(self) -> int:
        """The group's output channels."""
        return self.mask.mask.numel()

    def masked(self) -> int:
        """Channels masked now."""
        return int((self.mask.mask == 0).sum())

    def _mask_to(self, count: int) -> None:
        """Mask the least important unmasked channels until `count` are masked."""
        more = count - self.masked()
        if more <= 0:
            return
        if self.graph is None:
            raise RuntimeError("a copy of a gradually pruned model cannot be fine-tuned")
        with torch.no_grad():
            scores = group_importance(self.graph, self.leader, self.channels)
            scores = scores.masked_fill(self.mask.mask == 0, math.inf)
            self.mask.mask[torch.argsort(scores)[:more]] = 0.0

    def begin(self, steps: int) -> None:
        """Unmask every channel; the ramp takes `prune_ramp` of the `steps` to come."""
        self.mask.mask.fill_(1.0)
        self.ramp_steps = max(1, round(self.ramp.ramp * steps))

    def advance(self, step: int) -> None:
        """Mask what the schedule asks for after `step` fine-tune steps."""
        self._mask_to(cubic_removed(step, self.ramp_steps, self.ramp.remove))

    def finish(self) -> None:
        """Mask every channel the plan removes (the most important stay)."""
        self._mask_to(self.ramp.remove)

    def unmask(self, model: nn.Module) -> list[int]:
        """Make the masked tensors of `model` (this schedule's copy) plain zeros, in place.

        Returns:
            The masked channels, for the caller to remove.
        """
        self.finish()
        for module in model.modules():
            if parametrize.is_parametrized(module) and any(
                p is self.mask for plist in module.parametrizations.values() for p in plist
            ):
                bake_parametrized(module)
        return torch.nonzero(self.mask.mask == 0).flatten().tolist()


def _group(
    graph: Any, leader: nn.Module, channels: int
) -> tuple[list[tuple[nn.Module, bool]], list[nn.Module]]:
    """The layers with parameters in the group: those whose output channels are the group's,
    each with whether a mask on its weight and bias makes its channel zero exactly; and those
    that read the channels as their input."""
    group = graph.get_pruning_group(
        leader, out_channel_fn(leader, graph), idxs=list(range(channels))
    )
    outputs, readers = [], []
    for dep, idxs in group:
        module = dep.target.module
        if not any(True for _ in module.parameters(recurse=False)):
            continue  # an op: it passes the channels on
        if not graph.is_out_channel_pruning_fn(dep.handler):
            readers.append(module)
            continue
        aligned = [int(getattr(i, "idx", i)) for i in idxs] == list(range(channels))
        outputs.append((module, isinstance(module, _MASKED) and aligned))
    return outputs, readers


def why_not_ramp(
    graph: Any, leader: nn.Module, channels: int, *, reshaped: Collection[nn.Module] = ()
) -> str | None:
    """Why a group cannot be pruned gradually, or None when it can.

    Args:
        graph: the model's dependency graph.
        leader: the group's first layer.
        channels: its output channels.
        reshaped: layers a later stage rebuilds from their input width as applied (a low-rank
            split picks its rank from it): they must see the final width, so a group they
            read is pruned at once.
    """
    outputs, readers = _group(graph, leader, channels)
    inexact = [type(m).__name__ for m, exact in outputs if not exact]
    if inexact:
        return f"its channels reach a {inexact[0]}"
    if any(any(m is r for r in reshaped) for m in readers):
        return "a layer that reads its channels is factorized"
    return None


def ramp_channels(
    model: nn.Module, ramps: list[Ramp], inputs: tuple[torch.Tensor, ...], graph: Any
) -> None:
    """Mask each group at its final width, in place, and attach its schedule to `model`
    (the fine-tune moves the masks along the ramp; `bake_ramps` removes the channels).

    Args:
        model: the model (its other groups already pruned).
        ramps: the groups to prune gradually (`why_not_ramp` found nothing against them).
        inputs: the example inputs (baking traces the pruned model on them).
        graph: the model's dependency graph, as the one-shot removals left it (torch-pruning
            keeps it up to date as it prunes).
    """
    for ramp in ramps:
        leader = model.get_submodule(ramp.leader)
        mask = ChannelMask(features(leader)[1])
        for module, _ in _group(graph, leader, mask.mask.numel())[0]:
            for tensor in ("weight", "bias"):
                if isinstance(getattr(module, tensor, None), nn.Parameter):
                    parametrize.register_parametrization(module, tensor, mask)
        schedule = ChannelRamp(ramp, leader=leader, mask=mask, graph=graph, inputs=inputs)
        schedule.finish()  # as applied, the final width: what a 0-step fine-tune keeps
        attach_schedule(model, schedule)


def bake_ramps(model: nn.Module) -> None:
    """The masked channels removed for real, in place: every mask made zeros first
    (torch-pruning cannot resize a parametrized tensor), then each group pruned on one graph."""
    ramps = [s for s in schedules(model) if isinstance(s, ChannelRamp)]
    if not ramps:
        return
    drops = [(ramp.ramp.leader, ramp.unmask(model)) for ramp in ramps]
    graph = dependency_graph(model, ramps[0].inputs)
    for leader_name, drop in drops:
        if drop:
            leader = model.get_submodule(leader_name)
            graph.get_pruning_group(leader, out_channel_fn(leader, graph), idxs=drop).prune()
    detach_schedules(model, ramps)
