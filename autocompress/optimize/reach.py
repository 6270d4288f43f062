"""Say up front when a budget is below anything the search space can reach."""

from __future__ import annotations

from typing import Any

from autocompress.compress.method import Pick, ordered
from autocompress.config import LayerConfig, Plan
from autocompress.optimize.objectives import SearchContext
from autocompress.space.sample import valid_settings
from autocompress.space.spec import Knob


def _picks(kind: str, *, sure_only: bool = False) -> dict[str, Pick]:
    """Every method's most compressing choice per knob, for speed ("fastest") or size
    ("smallest"), as each method declares them (sparsity and 4-bit weights shrink the stored
    model but claim no faster kernel); `sure_only`: leave out the methods whose fastest
    levels are not always faster (`Method.always_faster`)."""
    picks: dict[str, Pick] = {}
    for method in ordered():
        if not (sure_only and not method.always_faster):
            picks.update(getattr(method, kind))
    return picks


def _fast_levels() -> dict[str, Any]:
    """The knob values that run layers on faster kernels (int8), every method's together."""
    return {k: v for method in ordered() for k, v in method.fast_level.items()}


def extreme_plan(
    knobs: list[Knob], pick: dict[str, Any], round_to: int | None, **fixed: Any
) -> Plan:
    """The plan that takes, for every knob named in `pick`, the choice `pick[setting]` selects.

    Args:
        knobs: the resolved decisions.
        pick: setting -> function choosing among its choices.
        round_to: channel multiple for pruning.
        fixed: settings forced on every layer where the space offers them (e.g. weight_bits=8).

    Returns:
        A valid plan (impossible combinations mapped as `plan_from_trial` does).
    """
    settings: dict[str, dict[str, Any]] = {}
    for knob in knobs:
        if knob.setting in fixed and fixed[knob.setting] in knob.choices:
            value = fixed[knob.setting]
        elif knob.setting in pick:
            value = pick[knob.setting](knob.choices)
        else:
            continue
        for layer in knob.layers:
            settings.setdefault(layer, {})[knob.setting] = value
    layers = {n: LayerConfig(**valid_settings(s)) for n, s in settings.items()}
    return Plan(layers=layers, round_to=round_to)


def reachability_notes(ctx: SearchContext) -> list[str]:
    """Warnings for budgets below the fastest or smallest plan of the space (measured).

    Returns:
        Zero, one or two lines to show before the search starts.
    """
    from autocompress.compress.apply import apply
    from autocompress.latency.profile import measure_plan
    from autocompress.optimize.objectives import artifact_size

    budget, knobs, notes = ctx.budget, list(ctx.knobs), []
    if budget.latency_ms is not None:
        # The lowest rank is not always faster: at batch 1 in ONNX Runtime a factorized layer
        # is two calls, and the plan with it measured 0.38 ms on digits-resnet where the same
        # plan without it measured 0.28 ms. So each extreme is measured with and without it.
        plans: list[Plan] = []
        for pick in (_picks("fastest"), _picks("fastest", sure_only=True)):
            for fixed in ({}, _fast_levels()):
                plan = extreme_plan(knobs, pick, ctx.round_to, **fixed)
                if plan not in plans:
                    plans.append(plan)
        ratios = [
            measure_plan(ctx.dense, plan, ctx.task, ctx.target, ctx.latency_inputs)
            for plan in plans
        ]
        fastest_ms = min(ratios) * ctx.baseline.latency_ms
        if fastest_ms > budget.latency_ms:
            notes.append(
                f"budget {budget.latency_ms:g} ms is below anything this search space reaches "
                f"(its fastest plan measures {fastest_ms:.2f} ms); searching anyway, the closest "
                "candidates will be marked infeasible"
            )
    if budget.size_bytes is not None:
        plan = extreme_plan(knobs, _picks("smallest"), ctx.round_to)
        smallest = artifact_size(ctx, apply(ctx.dense, plan, ctx.task.inputs()), plan)
        if smallest > budget.size_bytes:
            notes.append(
                f"--max-size {budget.size_bytes / 1000:.1f} kB is below the smallest plan in this "
                f"space ({smallest / 1000:.1f} kB); searching anyway, the closest candidates "
                "will be marked infeasible"
            )
    return notes
