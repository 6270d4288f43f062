"""The Pareto front as plain numbers, on hand-made points and on a real in-memory optuna study."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from autocompress.config import Budget, LayerConfig, Plan
from autocompress.optimize.objectives import constraint_values
from autocompress.optimize.pareto import (
    baseline_row,
    dominates,
    non_dominated,
    pareto_front,
)
from autocompress.optimize.record import Baseline, measured_ms, read

BASELINE = {"accuracy": 0.92, "latency_ms": 4.0, "size_bytes": 2000, "params": 500}


def _study(baseline: dict[str, Any] | None = BASELINE) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    if baseline is not None:
        study.set_user_attr("baseline", baseline)
    return study


def _plan(keep_ratio: float) -> dict[str, Any]:
    return Plan(layers={"stem.0": LayerConfig(keep_ratio=keep_ratio)}).to_dict()


def _tell(
    study: optuna.Study,
    accuracy: float,
    latency_ms: float,
    size: int,
    constraints: dict[str, float] | None = None,
    **extra: Any,
) -> int:
    trial = study.ask()
    attrs = {
        "accuracy": accuracy,
        "latency_ms": latency_ms,
        "latency_ratio": latency_ms / BASELINE["latency_ms"],
        "size_bytes": size,
        "params": size // 4,
        "plan": _plan(0.5),
        **extra,
    }
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    for name, value in (constraints or {}).items():
        trial.set_constraint(name, value)
    study.tell(trial, [accuracy, latency_ms, size])
    return trial.number


def test_dominates() -> None:
    assert dominates((0.9, 1.0, 100), (0.8, 2.0, 200))
    assert dominates((0.9, 1.0, 100), (0.9, 1.0, 101))  # better in one, equal elsewhere
    assert dominates((0.9, 1.0, 100), (0.89, 1.0, 100))
    assert dominates((0.9, 1.0, 100), (0.9, 1.5, 100))
    assert not dominates((0.9, 1.0, 100), (0.9, 1.0, 100))  # equal is not better
    assert not dominates((0.9, 1.0, 100), (0.95, 2.0, 200))  # worse accuracy
    assert not dominates((0.9, 2.0, 100), (0.8, 1.0, 200))  # worse latency
    assert not dominates((0.9, 1.0, 300), (0.8, 2.0, 200))  # worse size


def test_non_dominated() -> None:
    points = [
        (0.90, 2.0, 1000),  # 0: most accurate
        (0.85, 1.0, 800),  # 1: faster and smaller
        (0.80, 1.5, 900),  # 2: dominated by 1
        (0.70, 0.8, 1200),  # 3: fastest
        (0.90, 2.0, 1000),  # 4: duplicate of 0, kept
        (0.60, 3.0, 5000),  # 5: dominated by everything
    ]
    assert non_dominated(points) == [0, 1, 3, 4]
    assert non_dominated([]) == []
    assert non_dominated([(0.5, 1.0, 1)]) == [0]


def test_pareto_front_holds_exactly_the_non_dominated_feasible_trials() -> None:
    study = _study()
    a = _tell(study, 0.90, 2.0, 1000, {"latency_ms": -1.0, "size_bytes": -500.0})
    b = _tell(study, 0.85, 1.0, 800, {"latency_ms": -2.0, "size_bytes": -700.0})
    _tell(study, 0.80, 1.5, 900, {"latency_ms": -1.5, "size_bytes": -600.0})  # dominated by b
    # dominates everything but is over budget
    _tell(study, 0.95, 0.5, 500, {"latency_ms": 0.2, "size_bytes": -1000.0})
    _tell(study, 0.90, 2.0, 1000, {"latency_ms": -1.0, "size_bytes": -500.0})  # same as a
    c = _tell(study, 0.70, 0.8, 1200, {"latency_ms": -2.2, "size_bytes": -300.0})
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.ask()  # still running: not on the front

    front = pareto_front(study)
    assert [row["trial"] for row in front] == [a, b, c]
    assert all(row["feasible"] and row["violations"] == {} for row in front)
    assert front[0] == {
        "trial": a,
        "accuracy": 0.90,
        "candidate_accuracy": None,  # a PyTorch target's trial: the candidate is what deploys
        "baseline_accuracy": 0.92,
        "latency_ms": 2.0,
        "predicted_ms": None,
        "measured_ms": 2.0,
        "baseline_ms": 4.0,
        "latency_ratio": 0.5,
        "size_bytes": 1000,
        "baseline_size_bytes": 2000,
        "params": 250,
        "feasible": True,
        "violations": {},
        "finetuned": True,
        "verify_error": None,
        "not_applied": [],
        "plan": _plan(0.5),
        "origin": "sampled",  # neither a uniform warm start nor an allocated plan
        "best_alternative": None,  # the study measured no plain alternatives
        "best_alternative_ms": None,
    }


def test_pareto_front_reads_optional_attributes() -> None:
    study = _study()
    _tell(study, 0.9, 2.0, 1000, predicted_ms=1.8, finetuned=False)
    (row,) = pareto_front(study)
    assert row["predicted_ms"] == 1.8
    assert row["finetuned"] is False
    assert row["feasible"] is True  # no budget set: no constraints, feasible


def test_pareto_front_without_feasible_trials_shows_how_close_they_came() -> None:
    study = _study()
    a = _tell(study, 0.90, 2.0, 1000, {"latency_ms": 1.0, "size_bytes": -500.0})
    b = _tell(study, 0.85, 1.0, 800, {"latency_ms": 0.1, "size_bytes": 20.0})
    _tell(study, 0.80, 1.5, 900, {"latency_ms": 0.5, "size_bytes": 10.0})  # dominated by b
    front = pareto_front(study)
    assert [row["trial"] for row in front] == [a, b]
    assert all(row["feasible"] is False for row in front)
    assert front[0]["violations"] == {"latency_ms": 1.0}
    assert front[1]["violations"] == {"latency_ms": 0.1, "size_bytes": 20.0}


def test_pareto_front_ignores_infeasible_trials_once_one_is_feasible() -> None:
    study = _study()
    _tell(study, 0.95, 0.5, 500, {"accuracy_drop": 0.01})
    ok = _tell(study, 0.50, 5.0, 5000, {"accuracy_drop": 0.0})  # exactly on the budget
    assert [row["trial"] for row in pareto_front(study)] == [ok]


def test_pareto_front_of_a_study_without_baseline_or_trials() -> None:
    study = _study(baseline=None)
    _tell(study, 0.9, 2.0, 1000)
    assert pareto_front(study) == []
    assert baseline_row(study) is None
    assert pareto_front(_study()) == []


def test_baseline_row_has_the_candidate_shape() -> None:
    study = _study()
    _tell(study, 0.9, 2.0, 1000)
    row = baseline_row(study)
    assert row is not None
    assert row.keys() == pareto_front(study)[0].keys()
    assert (row["accuracy"], row["measured_ms"], row["size_bytes"]) == (0.92, 4.0, 2000)
    assert row["latency_ratio"] == 1.0
    assert Plan.from_dict(row["plan"]).is_identity


BASE = Baseline(accuracy=0.92, latency_ms=4.0, size_bytes=2000, params=500)
FIGURES = {"accuracy": 0.90, "latency_ms": 1.5, "size_bytes": 1200}


def test_constraint_values_one_per_budget_set() -> None:
    assert constraint_values(Budget(), BASE, FIGURES) == {}
    assert constraint_values(Budget.parse(latency="2ms"), BASE, FIGURES) == {
        "latency_ms": pytest.approx(-0.5)
    }
    assert constraint_values(Budget(size_bytes=1000), BASE, FIGURES) == {"size_bytes": 200.0}
    values = constraint_values(Budget.parse(latency="1ms", size="1kB", drop="1%"), BASE, FIGURES)
    assert values == {
        "latency_ms": pytest.approx(0.5),
        "size_bytes": 200.0,
        "accuracy_drop": pytest.approx(0.02 - 0.01),
    }
    assert isinstance(values["size_bytes"], float)


def test_constraint_values_are_feasible_within_budget() -> None:
    budget = Budget.parse(latency="2ms", size="1.2kB", drop="3%")
    values = constraint_values(budget, BASE, FIGURES)
    assert set(values) == {"latency_ms", "size_bytes", "accuracy_drop"}
    assert all(v <= 0 for v in values.values())
    assert values["size_bytes"] == 0.0  # exactly on budget is feasible
    assert values["accuracy_drop"] == pytest.approx(-0.01)


def test_a_drop_of_exactly_the_budget_is_within_it() -> None:
    baseline = dataclasses.replace(BASE, accuracy=0.9175)
    assert 0.9175 - 0.9075 - 0.01 > 0  # what floats make of it
    values = constraint_values(Budget.parse(drop="1%"), baseline, {**FIGURES, "accuracy": 0.9075})
    assert values == {"accuracy_drop": 0.0}
    over = constraint_values(Budget.parse(drop="1%"), baseline, {**FIGURES, "accuracy": 0.907})
    assert over["accuracy_drop"] == pytest.approx(0.0005)


def test_verified_latency_replaces_the_prediction_and_can_break_the_budget() -> None:
    study = _study()
    study.set_user_attr("budget", {"latency_ms": 2.0, "size_bytes": None, "max_drop": None})
    fits = _tell(study, 0.9, 1.5, 1000, {"latency_ms": -0.5}, predicted_ms=1.5)
    misses = _tell(study, 0.8, 1.2, 900, {"latency_ms": -0.8}, predicted_ms=1.2)
    unverified = _tell(study, 0.7, 1.0, 800, {"latency_ms": -1.0}, predicted_ms=1.0)
    study.set_user_attr(
        "verified",
        {str(fits): {"measured_ms": 1.6}, str(misses): {"measured_ms": 2.3}},
    )
    front = {c["trial"]: c for c in pareto_front(study)}
    assert front[fits]["measured_ms"] == front[fits]["latency_ms"] == 1.6
    assert front[fits]["predicted_ms"] == 1.5 and front[fits]["feasible"]
    assert not front[misses]["feasible"]
    assert front[misses]["violations"]["latency_ms"] == pytest.approx(0.3)
    assert front[unverified]["measured_ms"] is None
    assert front[unverified]["latency_ms"] == 1.0 and front[unverified]["feasible"]


def test_trials_measured_during_the_search_need_no_verification() -> None:
    study = _study()
    new = _tell(study, 0.9, 1.5, 1000, measured_ms=1.5)
    old = _tell(study, 0.8, 1.2, 900)  # a study from before the predictor: latency_ms measured
    front = {c["trial"]: c for c in pareto_front(study)}
    assert front[new]["measured_ms"] == 1.5 and front[old]["measured_ms"] == 1.2


def test_a_plan_told_again_shares_its_first_trials_measurement() -> None:
    study = _study()
    first = _tell(study, 0.9, 1.5, 1000, predicted_ms=1.5)
    again = _tell(study, 0.9, 1.5, 1000, predicted_ms=1.5, duplicate_of=first)
    study.set_user_attr("verified", {str(first): {"measured_ms": 1.4}})
    front = pareto_front(study)
    assert [c["trial"] for c in front] == [first]  # same figures once verified: shown once
    trials = {t.number: t for t in study.trials}
    assert measured_ms(trials[again], read(study)) == 1.4


def test_a_candidate_measured_slower_no_longer_hides_the_trials_it_dominated_on_paper() -> None:
    study = _study()
    study.set_user_attr("budget", {"latency_ms": 2.0, "size_bytes": None, "max_drop": None})
    paper = _tell(study, 0.9, 1.0, 1000, {"latency_ms": -1.0}, predicted_ms=1.0)
    hidden = _tell(study, 0.89, 1.2, 1000, {"latency_ms": -0.8}, predicted_ms=1.2)
    assert [c["trial"] for c in pareto_front(study)] == [paper]

    # Built and timed, `paper` runs at 1.8 ms: `hidden` is now faster, so it joins the front
    # (still unmeasured: the verify step measures it next); `paper` stays, within budget.
    study.set_user_attr("verified", {str(paper): {"measured_ms": 1.8}})
    front = {c["trial"]: c for c in pareto_front(study)}
    assert set(front) == {paper, hidden}
    assert front[paper]["latency_ms"] == 1.8 and front[paper]["feasible"]
    assert front[hidden]["measured_ms"] is None and front[hidden]["latency_ms"] == 1.2


def test_a_candidate_lists_what_its_plan_could_not_apply_in_training_and_at_verify() -> None:
    study = _study()
    fine_tuned = "sparsity not applied to 'conv2': pattern 2:4 needs ... got 42"
    built = "layer 'fc' stays fp32: no static int8 pattern"
    noted = _tell(study, 0.9, 2.0, 1000, not_applied=[fine_tuned], predicted_ms=2.0)
    clean = _tell(study, 0.8, 1.0, 800, predicted_ms=1.0)
    study.set_user_attr(
        "verified",
        {
            str(noted): {"measured_ms": 2.0, "not_applied": [fine_tuned, built]},
            str(clean): {"measured_ms": 1.0},
        },
    )
    notes = {c["trial"]: c["not_applied"] for c in pareto_front(study)}
    assert notes == {noted: [fine_tuned, built], clean: []}


def test_a_candidate_predicted_over_budget_that_measures_within_it_enters_the_front() -> None:
    study = _study()
    study.set_user_attr("budget", {"latency_ms": 2.0, "size_bytes": None, "max_drop": None})
    within = _tell(study, 0.85, 1.9, 1000, {"latency_ms": -0.1}, predicted_ms=1.9)
    over = _tell(study, 0.9, 2.2, 1000, {"latency_ms": 0.2}, predicted_ms=2.2)
    assert [c["trial"] for c in pareto_front(study)] == [within]

    study.set_user_attr("verified", {str(over): {"measured_ms": 1.8}})
    front = {c["trial"]: c for c in pareto_front(study)}
    assert set(front) == {over}  # faster and more accurate than `within`, as measured
    assert front[over]["feasible"] and front[over]["violations"] == {}
