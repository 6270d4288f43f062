"""Structured channel pruning: output channels physically removed with torch-pruning's DepGraph.

torch-pruning decides what is coupled (the dependency graph) and what matters (L2 magnitude
importance over the whole coupled group); the plan decides how much.

Attention heads: the query/key/value projections of a Hugging Face attention module (one with
`num_attention_heads` and `attention_head_size`) form one coupling group with the input of the
attention's output projection. Such a group is pruned in whole heads: its kept width is a
multiple of the head size, heads are ranked by their summed importance, and the module's head
count is updated afterwards. FFN width is the group of the intermediate projection.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from statistics import mean
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.compress.coupling import (
    PRUNABLE,
    coupling_groups,
    dependency_graph,
    features,
    group_importance,
    out_channel_fn,
    output_layers,
)
from autocompress.compress.gradual import Ramp, bake_ramps, check_ramp, ramp_channels, why_not_ramp
from autocompress.compress.method import Applying, KernelEffect, Method, Offers, Values, register
from autocompress.config import LayerConfig, Plan, Setting, number
from autocompress.errors import PlanError, PlanWarning


def _check_keep(value: Any) -> str | None:
    if not 0.0 < number("keep_ratio", value) <= 1.0:
        return f"keep_ratio must be in (0, 1], got {value}"
    return None


@register
class Prune(Method):
    """Structured channel pruning. Knobs, each decided once per coupling group (layers pruned
    together): `keep_ratio`, the fraction of output channels kept, in (0, 1], 1.0 = off; and
    `prune_ramp`, the fraction of the fine-tune over which they go (`compress/gradual.py`),
    in [0, 1), 0 = all before it."""

    name = "prune"
    stage = 10
    warm_start = 0
    settings = (
        Setting("keep_ratio", 1.0, _check_keep, levels=(0.75, 0.5, 0.25),
                layer_types=frozenset({"Conv1d", "Conv2d", "Linear", "LSTM"}), decided_per="group"),
        Setting("prune_ramp", 0.0, check_ramp, levels=(0.5, 0.75),
                layer_types=frozenset({"Conv1d", "Conv2d", "Linear"}), decided_per="group"),
    )  # fmt: skip
    fastest: ClassVar[dict[str, Any]] = {"keep_ratio": min}
    smallest: ClassVar[dict[str, Any]] = {"keep_ratio": min}

    def rule(self, values: Values) -> str | None:
        """A ramped layer is neither factorized nor shared (both replace the masked weight)."""
        if values["prune_ramp"] > 0 and (values["rank_ratio"] < 1 or values["share_values"]):
            return "prune_ramp needs rank_ratio 1 and share_values 0 (both replace the weight)"
        return None

    def repair(self, values: dict[str, Any]) -> None:
        """No ramp where nothing is pruned, or where the layer is factorized or shared."""
        if (
            values.get("keep_ratio", 1.0) >= 1.0
            or values.get("rank_ratio", 1.0) < 1.0
            or values.get("share_values", 0)
        ):
            values.pop("prune_ramp", None)

    def active(self, cfg: LayerConfig) -> bool:
        """On where channels are pruned (a ramp alone prunes nothing)."""
        return cfg.keep_ratio < 1.0

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Remove the planned channels, or mask them for a ramp (`prune_channels`)."""
        prune_channels(model, plan, context.inputs)

    def bake(self, model: nn.Module) -> None:
        """The channels still masked (gradual pruning) removed for real."""
        bake_ramps(model)

    def kernel_effect(self, cfg: LayerConfig) -> KernelEffect:
        """Fewer output channels."""
        return KernelEffect(keep_ratio=cfg.keep_ratio)

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """Every other keep ratio in [0.3, 1) that every coupling group offers."""
        ratios = [r for r in offers.shared.get("keep_ratio", []) if 0.3 <= r < 1.0]
        return [{"keep_ratio": r} for r in sorted(ratios, reverse=True)[::2]]

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Every keep ratio below 1 that every coupling group offers."""
        keeps = sorted((r for r in offers.shared.get("keep_ratio", []) if r < 1.0), reverse=True)
        return [(f"keep {r:g}", {"keep_ratio": r}) for r in keeps]

    def paired_levels(self, offers: Offers, *, every: bool) -> list[tuple[str, dict[str, Any]]]:
        """Each keep ratio in [0.3, 1) (every one below 1 for the sweep)."""
        levels = self.sweep_levels(offers)
        return levels if every else [(k, v) for k, v in levels if v["keep_ratio"] >= 0.3]

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'keep 0.62 x9': the mean keep ratio over the layers pruned; 'gradual x3': those
        pruned along a ramp."""
        keeps = [c["keep_ratio"] for c in configs if "keep_ratio" in c]
        ramps = sum(1 for c in configs if c.get("prune_ramp", 0) and "keep_ratio" in c)
        parts = [f"keep {mean(keeps):.2f} x{len(keeps)}"] if keeps else []
        return parts + ([f"gradual x{ramps}"] if ramps else [])


def kept_channels(channels: int, keep_ratio: float, round_to: int | None = None) -> int:
    """How many of `channels` survive a keep ratio (at least one; a multiple of round_to if given).

    Args:
        channels: the layer's output channels now.
        keep_ratio: fraction to keep, in (0, 1].
        round_to: round the kept count to the nearest multiple of this (never below it); a
            layer of exactly `round_to` channels is that multiple and stays whole, one with
            fewer is rounded plainly.

    Returns:
        The number of channels kept.
    """
    kept = max(1, round(channels * keep_ratio))
    if round_to and round_to > 1 and channels >= round_to:
        kept = max(round_to, round_to * round(kept / round_to))
    return min(kept, channels)


def attention_heads(model: nn.Module) -> dict[str, tuple[nn.Module, int]]:
    """The Linear projections that split into attention heads, and their attention module.

    Args:
        model: any model; attention modules are found by their `num_attention_heads` and
            `attention_head_size` attributes (Hugging Face BERT-style self-attention).

    Returns:
        ``{projection name: (attention module, head size)}`` for each Linear child of such a
        module (query, key and value).
    """
    found: dict[str, tuple[nn.Module, int]] = {}
    for name, module in model.named_modules():
        head_size = getattr(module, "attention_head_size", None)
        if isinstance(head_size, int) and hasattr(module, "num_attention_heads"):
            for child_name, child in module.named_children():
                if isinstance(child, nn.Linear):
                    found[f"{name}.{child_name}" if name else child_name] = (module, head_size)
    return found


def group_multiples(model: nn.Module, groups: list[tuple[str, list[str]]]) -> dict[str, int]:
    """The channel multiple each coupling group must keep: the head size for attention heads.

    Args:
        model: the model.
        groups: `coupling_groups(model, graph)`.

    Returns:
        ``{group leader: multiple}`` for the groups that are pruned in whole heads.
    """
    heads = attention_heads(model)
    multiples = {}
    for leader, members in groups:
        sizes = {heads[m][1] for m in members if m in heads}
        if sizes:
            multiples[leader] = max(sizes)
    return multiples


def prune_channels(model: nn.Module, plan: Plan, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """Remove output channels in place so every coupling group keeps its planned ratio.

    A group with a `prune_ramp` is masked at its final width instead, to be pruned
    gradually by the fine-tune (`compress/gradual.py`); one whose mask could not be exact is
    pruned at once, with a plan note.

    Args:
        model: the model to prune (modified in place).
        plan: per-layer `keep_ratio` and `prune_ramp`; all layers of one coupling group must
            agree.
        inputs: an example input, to trace the dependency graph.

    Returns:
        The same model object, physically smaller (or masked, for the ramped groups).

    Raises:
        PlanError: a layer in the plan does not exist, cannot be pruned (the output layer),
            or disagrees with the other layers of its group.
    """
    wanted = {name: cfg.keep_ratio for name, cfg in plan.layers.items() if cfg.keep_ratio < 1.0}
    if not wanted:
        return model
    modules = dict(model.named_modules())
    missing = sorted(set(plan.layers) - set(modules))
    if missing:
        raise PlanError(f"plan names layer {missing[0]!r}, which this model does not have")
    was_training = model.training
    model.eval()
    try:
        graph = dependency_graph(model, inputs)
        multiples = group_multiples(model, coupling_groups(model, graph))
        ramps = []
        factorized = [modules[n] for n, c in plan.layers.items() if c.rank_ratio < 1.0]
        for leader_name, keep_ratio, ramp in group_ratios(model, graph, wanted, plan):
            leader = modules[leader_name]
            channels = features(leader)[1]
            unit = multiples.get(leader_name, 1)
            kept = kept_channels(channels, keep_ratio, multiples.get(leader_name, plan.round_to))
            if kept < channels and ramp != 0:
                why = "its layers disagree on prune_ramp" if ramp < 0 else None
                why = why or ("it is pruned in whole heads" if unit > 1 else None)
                why = why or why_not_ramp(graph, leader, channels, reshaped=factorized)
                if why is None:
                    ramps.append(Ramp(leader_name, channels - kept, ramp))
                    continue
                warnings.warn(
                    f"group {leader_name!r} pruned at once, not gradually: {why}",
                    PlanWarning,
                    stacklevel=2,
                )
            if kept < channels:
                _drop_least_important(graph, leader, channels, channels - kept, unit=unit)
        _update_head_counts(model)
        ramp_channels(model, ramps, inputs, graph)  # after every removal: masks block resizing
    finally:
        model.train(was_training)
    return model


def group_ratios(
    model: nn.Module, graph: Any, wanted: dict[str, float], plan: Plan
) -> list[tuple[str, float, float]]:
    """(group leader, keep ratio, ramp) for every group the plan prunes, after checking the
    plan (`wanted`: layer -> keep ratio below 1); the ramp is -1 where the group's layers
    disagree on it.

    A layer the plan does not name keeps 1.0, so a plan that names only some members of a
    group disagrees with itself and is refused rather than silently pruning the others.
    """
    modules = dict(model.named_modules())
    outputs = {name for name, m in modules.items() if m in output_layers(model, graph)}
    pruned_outputs = sorted(set(wanted) & outputs)
    if pruned_outputs:
        raise PlanError(
            f"layer {pruned_outputs[0]!r} produces the model's output; "
            "its channels cannot be pruned"
        )
    groups = coupling_groups(model, graph)
    ungrouped = sorted(set(wanted) - {m for _, members in groups for m in members})
    if ungrouped:
        raise PlanError(f"layer {ungrouped[0]!r} has no prunable output channels")
    per_group = []
    for leader, members in groups:
        if not any(m in wanted for m in members):
            continue
        ratios = {wanted.get(m, 1.0) for m in members}
        if len(ratios) > 1:
            given = ", ".join(f"{m}={wanted.get(m, 1.0):g}" for m in members)
            raise PlanError(
                f"layers {', '.join(members)} are pruned together and need one keep_ratio, "
                f"but the plan gives {given}"
            )
        # A ramp needs every member (a factorized member has none): else -1, pruned at once.
        ramps = {plan.config(m).prune_ramp for m in members}
        per_group.append((leader, ratios.pop(), ramps.pop() if len(ramps) == 1 else -1.0))
    return per_group


def _drop_least_important(
    graph: Any, leader: nn.Module, channels: int, count: int, *, unit: int = 1
) -> None:
    """Remove the `count` of `channels` output channels of `leader`'s group with the lowest
    L2 importance, in blocks of `unit` consecutive channels (whole attention heads)."""

    prune_fn = out_channel_fn(leader, graph)
    with torch.no_grad():
        scores = group_importance(graph, leader, channels)
        blocks = scores.reshape(channels // unit, unit).sum(dim=1)
        dropped = torch.argsort(blocks)[: count // unit].tolist()
        drop = sorted(b * unit + i for b in dropped for i in range(unit))
        graph.get_pruning_group(leader, prune_fn, idxs=drop).prune()


def _update_head_counts(model: nn.Module) -> None:
    """Make each attention module's head count match its pruned projections."""
    for name, (attention, head_size) in attention_heads(model).items():
        width = model.get_submodule(name).out_features
        attention.num_attention_heads = width // head_size
        if hasattr(attention, "all_head_size"):
            attention.all_head_size = width


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels / features of every prunable layer (for reports and checks)."""
    return {name: features(m)[1] for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
