"""The compression-method registry: what a method declares, and `METHODS`, which holds them.

A method is one module under `compress/` with a `Method` subclass decorated by `@register`:
its knobs (`Setting`s, with their defaults, checks and rules between them), how it changes a
model (`apply`, in its `stage` of `apply`'s fixed order), what it does to a layer's kernels
and stored bytes, and the uniform levels a search starts from. Every module of `compress/`
is imported with the package, so a new module registers itself; `apply`, the search space,
the uniform plans, the latency model, the reachability check and the report read the
registry instead of naming knobs.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.config import LayerConfig, Plan, Setting, register_settings
from autocompress.registry import Registry

Inputs = tuple[torch.Tensor, ...]
Values = Mapping[str, Any]


@dataclass(frozen=True)
class KernelEffect:
    """What a layer's config does to the kernels it deploys as (the latency model's view).

    Args:
        keep_ratio: fraction of output channels kept (structured pruning).
        rank_ratio: rank kept by a low-rank split into two kernels; 1.0 keeps one kernel.
        bits: (weight, activation) bits of the kernel's number format; (32, 32) is float.
        unrolls: an LSTM layer runs as plain Linear layers in a step loop.
        removed: the layer is gone from the deployed model (its residual block was dropped).
    """

    keep_ratio: float = 1.0
    rank_ratio: float = 1.0
    bits: tuple[int, int] = (32, 32)
    unrolls: bool = False
    removed: bool = False


@dataclass
class Applying:
    """What `apply` passes from stage to stage.

    Args:
        inputs: the example input batch, as an argument tuple.
        unrolled: the LSTM layers unrolled into Linears before the stages after pruning.
    """

    inputs: Inputs
    unrolled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Offers:
    """The levels a search space offers per knob, for uniform plans.

    Args:
        offered: knob -> levels some decision of it offers (sorted).
        shared: knob -> levels every decision of it offers (sorted).
    """

    offered: Mapping[str, list[Any]]
    shared: Mapping[str, list[Any]]


Pick = Callable[[Sequence[Any]], Any]


class Schedule(ABC):
    """A training-time form that changes over the fine-tune (gradual pruning's masks): the
    fine-tune calls `begin` before its first step, `advance` after each, `finish` at the end.
    A method attaches it to the model it applies to (`attach_schedule`)."""

    @abstractmethod
    def begin(self, steps: int) -> None:
        """A fine-tune of `steps` steps begins."""

    @abstractmethod
    def advance(self, step: int) -> None:
        """Fine-tune step `step` (from 1) is done."""

    @abstractmethod
    def finish(self) -> None:
        """The fine-tune ended (or there is none): reach the plan's final form."""


_SCHEDULES = "_autocompress_schedules"  # a plain attribute: copied with the model, not saved


def attach_schedule(model: nn.Module, schedule: Schedule) -> None:
    """Attach a schedule to `model` (a deep copy of the model copies it)."""
    model.__dict__.setdefault(_SCHEDULES, []).append(schedule)


def schedules(model: nn.Module) -> list[Schedule]:
    """The schedules attached to `model`."""
    return list(model.__dict__.get(_SCHEDULES, []))


def detach_schedules(model: nn.Module, done: Collection[Schedule]) -> None:
    """Detach schedules whose training-time form was baked away."""
    kept = [s for s in schedules(model) if all(s is not d for d in done)]
    model.__dict__[_SCHEDULES] = kept


class Method(ABC):
    """A compression method. Only `apply` is required; everything else defaults to "this
    method does not do that" (no kernel change, no storage change, no uniform level).

    Class attributes:
        name: its `--methods` name ("prune").
        stage: its place in `apply`'s order, lower first (prune 10, lowrank 20, sparse 30,
            quant 50).
        settings: the knobs it owns.
        warm_start: its place among the uniform warm starts, lower first.
        fastest, smallest: knob -> which of a space's levels makes a layer fastest, smallest
            (`optimize.reach` builds the extreme plans from them).
        fast_level: knob values that run a layer on faster kernels (int8): tried on every
            layer that offers them, and paired with every keep ratio in the uniform plans.
        always_faster: whether the `fastest` levels are faster on every target (a factorized
            layer is two calls: at batch 1 it can be slower); reach tries plans without the
            methods where they are not.
        fast_label: how the uniform sweep names `fast_level` ("w8a8").
    """

    name: ClassVar[str]
    stage: ClassVar[int]
    settings: ClassVar[tuple[Setting, ...]]
    warm_start: ClassVar[int] = 100
    fastest: ClassVar[Mapping[str, Pick]] = {}
    smallest: ClassVar[Mapping[str, Pick]] = {}
    fast_level: ClassVar[Mapping[str, Any]] = {}
    fast_label: ClassVar[str] = ""
    always_faster: ClassVar[bool] = True

    # --- knobs ---------------------------------------------------------------------------
    def rule(self, values: Values) -> str | None:
        """Why these knob values (every knob, defaults included) cannot go together, or None."""
        return None

    def repair(self, values: dict[str, Any]) -> None:
        """Map a combination `rule` refuses to the nearest valid one, in place (the sampler
        draws each knob alone)."""
        return None

    def active(self, cfg: LayerConfig) -> bool:
        """Whether `cfg` turns this method on (some knob of it away from its default)."""
        return any(cfg[s.name] != s.default for s in self.settings)

    # --- the model -----------------------------------------------------------------------
    @abstractmethod
    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Apply the plan's settings of this method to `model`, in place, ready to fine-tune.

        Args:
            model: the model, already changed by the earlier stages.
            plan: the whole plan (each layer's config holds every method's knobs).
            context: the example inputs and what earlier stages did.
        """

    def unrolls(self, cfg: LayerConfig) -> bool:
        """Whether this method needs an LSTM layer unrolled into plain Linear layers."""
        return False

    def bake(self, model: nn.Module) -> None:
        """Make the method's training-time form permanent (plain layers), in place."""
        return None

    def deploy(
        self,
        model: Any,
        plan: Plan,
        inputs: Inputs,
        calibration: Iterable[Inputs],
        *,
        compile: bool,
    ) -> Any:
        """The deployed form of a baked model (real kernels); `model` itself by default."""
        return model

    def runtime_int8(self, cfg: LayerConfig) -> bool:
        """Whether a runtime target (ONNX Runtime, OpenVINO) runs the layer in int8."""
        return False

    def runtime_kind(self, cfg: LayerConfig) -> str | None:
        """How a runtime target runs the layer, in words, when this method decides it; a layer
        it runs in int8 (`runtime_int8`) is named by the runtime instead."""
        return None

    def refusal(self, module: nn.Module, setting: str, value: Any) -> str | None:
        """Why the dense layer `module` cannot take `setting = value`, or None when it can."""
        return None

    # --- cost ----------------------------------------------------------------------------
    def kernel_effect(self, cfg: LayerConfig) -> KernelEffect:
        """What `cfg` does, through this method, to the layer's kernels (nothing by default)."""
        return KernelEffect()

    def stored_bytes(self, weight: torch.Tensor, cfg: LayerConfig, *, table: bool) -> int | None:
        """Bytes of a baked weight as this method stores it, or None when it leaves the
        storage alone (the latest stage that stores a weight decides its bytes).

        Args:
            weight: the baked weight (zeros in place); first dimension = output channels.
            cfg: the layer's config.
            table: the weight is an embedding table.
        """
        return None

    # --- search --------------------------------------------------------------------------
    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """The uniform settings worth a warm start, mildest first."""
        return []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Every uniform setting the space offers, labelled, mildest first."""
        return []

    def paired_levels(self, offers: Offers, *, every: bool) -> list[tuple[str, dict[str, Any]]]:
        """Levels tried together with each method's `fast_level` (every keep ratio with int8):
        those of the warm starts, or `every` one for the uniform sweep."""
        return []

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """Parts of a one-line plan summary ("keep 0.62 x9"), from plan JSON layer configs."""
        return []


METHODS: Registry[Method] = Registry("compression method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to `METHODS` and its knobs to `LayerConfig`."""
    method = cls()
    if cls.name in METHODS:
        raise ValueError(f"compression method {cls.name!r} is registered twice")
    register_settings(cls.settings, order=cls.stage, rule=method.rule, repair=method.repair)
    METHODS.register(cls.name)(method)
    return cls


def ordered() -> list[Method]:
    """Every registered method in `apply`'s order."""
    return sorted((METHODS.get(n) for n in METHODS), key=lambda m: m.stage)


@functools.lru_cache(maxsize=65536)
def kernel_effect(cfg: LayerConfig) -> KernelEffect:
    """What `cfg` does to a layer's kernels, every method together: channels kept multiply,
    the lowest rank and the first non-float number format win, any method may unroll."""
    keep, rank, bits, unrolls, removed = 1.0, 1.0, (32, 32), False, False
    for method in ordered():
        effect = method.kernel_effect(cfg)
        keep *= effect.keep_ratio
        rank = min(rank, effect.rank_ratio)
        bits = effect.bits if bits == (32, 32) else bits
        unrolls = unrolls or effect.unrolls or method.unrolls(cfg)
        removed = removed or effect.removed
    return KernelEffect(keep, rank, bits, unrolls, removed)


def present(plan: Plan, model: nn.Module, *, had: Collection[str] | None = None) -> Plan:
    """The plan without the layers a method removed from `model` (depth pruning drops whole
    blocks): the later stages have nothing to do on them.

    Args:
        plan: the plan.
        model: the model as the stages so far left it.
        had: the layers the model had before any stage; None trusts that every layer the plan
            names existed (a plan already applied to this model). A layer the plan names that
            the model never had is kept, for the stage that reads it to refuse.

    Returns:
        The plan, or a copy without the removed layers.
    """
    names = {name for name, _ in model.named_modules()}
    gone = {n for n in plan.layers if n not in names and (had is None or n in had)}
    if not gone:
        return plan
    return Plan({n: c for n, c in plan.layers.items() if n not in gone}, round_to=plan.round_to)


def owner(setting: str) -> Method:
    """The method that owns a knob.

    Raises:
        KeyError: no registered method owns it.
    """
    for method in ordered():
        if any(s.name == setting for s in method.settings):
            return method
    raise KeyError(setting)
