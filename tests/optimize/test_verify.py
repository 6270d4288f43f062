"""The verify step on a real digits-cnn study: every front candidate measured, failures kept."""

from __future__ import annotations

import optuna

from autocompress.config import Budget, LayerConfig, Plan
from autocompress.hardware.targets import resolve_target
from autocompress.optimize.latency import batch_inputs
from autocompress.optimize.objectives import SearchContext
from autocompress.optimize.pareto import pareto_front
from autocompress.optimize.record import Baseline
from autocompress.optimize.verify import verify_front
from autocompress.zoo import load_model, load_task


def _tell(study: optuna.Study, accuracy: float, predicted_ms: float, plan: Plan) -> int:
    trial = study.ask()
    attrs = {
        "accuracy": accuracy, "latency_ms": predicted_ms, "predicted_ms": predicted_ms,
        "latency_ratio": predicted_ms, "size_bytes": 1000, "params": 100, "plan": plan.to_dict(),
    }  # fmt: skip
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    study.tell(trial, [accuracy, predicted_ms, 1000])
    return trial.number


def test_a_plan_that_cannot_be_built_is_marked_and_the_front_is_still_measured() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dense, task = load_model("digits-cnn"), load_task("digits-cnn")
    inputs = batch_inputs(task, 1)
    ctx = SearchContext(
        dense=dense, task=task, target=resolve_target("cpu", threads=1), budget=Budget(),
        knobs=[], round_to=None, finetune_steps=0, train_threads=1, latency_inputs=inputs,
        baseline=Baseline(accuracy=0.99, latency_ms=1.0, size_bytes=2000, params=500),
    )  # fmt: skip
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr(
        "baseline", {"accuracy": 0.99, "latency_ms": 1.0, "size_bytes": 2000, "params": 500}
    )
    # Most accurate and, on paper, fastest: but its plan names a layer the model lacks.
    broken = _tell(study, 0.99, 0.5, Plan(layers={"no.such.layer": LayerConfig(keep_ratio=0.5)}))
    pruned = _tell(study, 0.98, 0.6, Plan(layers={"3": LayerConfig(keep_ratio=0.5)}))
    assert [c["trial"] for c in pareto_front(study)] == [broken]

    assert verify_front(study, ctx, show_progress=False) == 2
    front = {c["trial"]: c for c in pareto_front(study)}
    # The broken plan is kept, marked and infeasible; the trial it hid was measured in turn.
    assert front[broken]["verify_error"].startswith("PlanError: plan names layer")
    assert not front[broken]["feasible"] and front[broken]["measured_ms"] is None
    assert front[pruned]["measured_ms"] > 0 and front[pruned]["feasible"]
    assert front[pruned]["verify_error"] is None
    assert verify_front(study, ctx, show_progress=False) == 0  # nothing left to measure
