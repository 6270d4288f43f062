"""The Pareto front of a study as plain numbers: what `show` prints and the report draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

Candidate = dict[str, Any]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when `a` is at least as good as `b` everywhere and better somewhere.

    Both are (accuracy up, latency down, size down).
    """
    ge = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    gt = a[0] > b[0] or a[1] < b[1] or a[2] < b[2]
    return ge and gt


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (duplicates all kept)."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


def _violation(trial: optuna.trial.FrozenTrial) -> float:
    return sum(max(0.0, v) for v in trial.constraints.values())


def candidate(trial: optuna.trial.FrozenTrial, baseline: dict[str, Any]) -> Candidate:
    """One trial as the figures a person compares (the `show --json` schema)."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "accuracy": attrs["accuracy"],
        "baseline_accuracy": baseline["accuracy"],
        "predicted_ms": attrs.get("predicted_ms"),
        "measured_ms": attrs["latency_ms"],
        "baseline_ms": baseline["latency_ms"],
        "latency_ratio": attrs["latency_ratio"],
        "size_bytes": attrs["size_bytes"],
        "baseline_size_bytes": baseline["size_bytes"],
        "params": attrs["params"],
        "feasible": _violation(trial) <= 0.0,
        "violations": {k: v for k, v in trial.constraints.items() if v > 0},
        "finetuned": attrs.get("finetuned", True),
        "plan": attrs["plan"],
    }


def pareto_front(study: optuna.Study) -> list[Candidate]:
    """The study's front, best accuracy first.

    The non-dominated feasible trials; when no trial is feasible, the non-dominated trials of
    all, each marked `feasible: false` with its violations, so the user sees how close it came.
    Trials with identical figures (the same plan told twice) appear once.
    """
    baseline = study.user_attrs.get("baseline")
    if baseline is None:
        return []
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pool = [t for t in done if _violation(t) <= 0.0] or done
    front = [candidate(pool[i], baseline) for i in non_dominated([t.values for t in pool])]
    front.sort(key=lambda c: (-c["accuracy"], c["measured_ms"], c["trial"]))
    seen: set[tuple[float, float, int]] = set()
    unique = []
    for c in front:
        figures = (c["accuracy"], c["measured_ms"], c["size_bytes"])
        if figures not in seen:
            seen.add(figures)
            unique.append(c)
    return unique


def baseline_row(study: optuna.Study) -> Candidate | None:
    """The dense model as a row of the same shape as a candidate (trial None)."""
    b = study.user_attrs.get("baseline")
    if b is None:
        return None
    return {
        "trial": None,
        "accuracy": b["accuracy"],
        "baseline_accuracy": b["accuracy"],
        "predicted_ms": None,
        "measured_ms": b["latency_ms"],
        "baseline_ms": b["latency_ms"],
        "latency_ratio": 1.0,
        "size_bytes": b["size_bytes"],
        "baseline_size_bytes": b["size_bytes"],
        "params": b["params"],
        "feasible": None,
        "violations": {},
        "finetuned": False,
        "plan": {"version": 1, "round_to": None, "layers": {}},
    }
