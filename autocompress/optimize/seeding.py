"""Queue a new study's allocated plans (`optimize.allocate`) after its uniform warm starts."""

from __future__ import annotations

import optuna

from autocompress.optimize import record
from autocompress.optimize.allocate import allocation_seeds
from autocompress.optimize.objectives import SearchContext


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
