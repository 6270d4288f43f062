"""What a search starts from and goes on from: a new study's allocated plans queued after its
uniform warm starts (`optimize.allocate`), and the refiner that follows them (`optimize.refine`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import optuna

from autocompress.optimize import record
from autocompress.optimize.allocate import allocation_seeds, plan_latency
from autocompress.optimize.objectives import SearchContext
from autocompress.optimize.refine import Refiner

if TYPE_CHECKING:
    from autocompress.evaluate.sensitivity import Sensitivity


def seed_allocations(
    study: optuna.Study, ctx: SearchContext, model: str, show_progress: bool, room: int
) -> str:
    """Queue the allocated per-layer plans after the uniform warm starts, at most `room` of
    them spread over the budgets; the note says so."""
    assert ctx.predictor is not None
    seeds, measured, path = allocation_seeds(
        ctx.dense,
        ctx.task,
        ctx.knobs,
        predictor=ctx.predictor,
        dense_ms=ctx.baseline.latency_ms,
        model=model,
        round_to=ctx.round_to,
        show_progress=show_progress,
    )
    record.write_sensitivity(
        study,
        metric_name=measured.metric_name,
        dense=measured.dense,
        rows=measured.rows,
        file=str(path),
    )
    budgeted = [s for s in seeds if s.budget_ms is not None]
    depth = [s for s in seeds if s.budget_ms is None][: max(room - len(budgeted), room // 4)]
    room -= len(depth)
    if len(budgeted) > room:  # evenly over the budgets, the fastest kept
        budgeted = [
            budgeted[round(i * (len(budgeted) - 1) / max(room - 1, 1))] for i in range(room)
        ]
    for seed in budgeted + depth:
        study.enqueue_trial(
            seed.params, user_attrs={"warm_start": "allocated"}, skip_if_exists=True
        )
    span = (
        f"{budgeted[0].predicted_ms:.3g}-{budgeted[-1].predicted_ms:.3g} ms" if budgeted else "none"
    )
    dropping = {0: "", 1: " and 1 that drops only the cheapest block"}.get(
        len(depth), f" and {len(depth)} that drop only the cheapest 1 to {len(depth)} blocks"
    )
    return (
        f"allocated {len(budgeted)} per-layer plans for latency budgets {span} (predicted)"
        f"{dropping} from the sensitivity {path}"
    )


def refiner_for(ctx: SearchContext, *, model: str, max_drop: float) -> Refiner:
    """The refiner of a search with predicted latency (its note: `Refiner.note`).

    The model's sensitivity (the descent's costs) is read when the first refinement is
    chosen: cached by then in a new study (the allocation measured it), measured there
    otherwise.

    Args:
        ctx: the search's context (its predictor fitted).
        model: the model's label (the sensitivity cache's folder).
        max_drop: its floor, the most a plan it descends from may lose: the search's
            (`refine.floor_drop`), or as far as a search that polishes its last trials may
            recover (`Polisher.reach`).
    """
    from autocompress.evaluate.sensitivity import sensitivity_for

    assert ctx.predictor is not None

    @functools.cache
    def measured() -> Sensitivity:
        found, _ = sensitivity_for(
            ctx.dense, ctx.task, ctx.knobs, model=model, round_to=ctx.round_to
        )
        return found

    def cost(param: str, value: Any) -> float:
        return measured().cost(param, value)

    predict_ms = plan_latency(
        ctx.knobs, predictor=ctx.predictor, dense_ms=ctx.baseline.latency_ms,
        round_to=ctx.round_to,
    )  # fmt: skip
    return Refiner(ctx.knobs, cost, predict_ms, dense=ctx.baseline.accuracy, max_drop=max_drop)
