"""The Pareto front of a study as plain numbers: what `show` prints and the report draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from autocompress.optimize.record import (
    StudyRecord,
    check_trial,
    measured_ms,
    read,
    verify_error,
    violations,
)

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


def _point(c: Candidate) -> tuple[float, float, int]:
    return (c["accuracy"], c["latency_ms"], c["size_bytes"])


def not_applied(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> list[str]:
    """What a trial's plan could not apply (`compress.apply.plan_notes`): while it was built
    for the fine-tune, then in its deployable build at the verify step."""
    notes = [
        *trial.user_attrs.get("not_applied", ()),
        *record.verified_figures(trial).get("not_applied", ()),
    ]
    return list(dict.fromkeys(notes))


def candidate(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> Candidate:
    """One trial as the figures a person compares (the `show --json` schema).

    Args:
        trial: a complete trial.
        record: its study's record (dense figures, budget, verify figures, alternatives).

    Returns:
        The candidate; `latency_ms` is the measured latency where there is one, else predicted;
        `feasible` and `violations` as `record.violations` judges them; `verify_error`: why
        the verify step could not build or time it (then infeasible);
        `not_applied`: the parts of its plan that layers could not take (`not_applied`);
        `candidate_accuracy`: on a runtime target, the PyTorch candidate's accuracy (its
        `accuracy` is the deployed model's; `objectives.deployed_accuracy`), else None;
        `best_alternative` (label) and `best_alternative_ms`: the plain alternative it is
        compared with (`alternatives.best_alternative`), None when the study measured none.
    """
    from autocompress.optimize.alternatives import best_alternative

    assert record.baseline is not None, "a candidate is compared with the dense figures"
    baseline = record.baseline
    attrs = trial.user_attrs
    measured = measured_ms(trial, record)
    over = violations(trial, record)
    best = best_alternative(record.alternatives, attrs["accuracy"])
    return {
        "trial": trial.number,
        "accuracy": attrs["accuracy"],
        # on a runtime target `accuracy` is the deployed model's; this, the PyTorch model's
        "candidate_accuracy": attrs.get("candidate_accuracy"),
        "baseline_accuracy": baseline.accuracy,
        "latency_ms": measured if measured is not None else attrs["latency_ms"],
        "predicted_ms": attrs.get("predicted_ms"),
        "measured_ms": measured,
        "baseline_ms": baseline.latency_ms,
        "latency_ratio": attrs["latency_ratio"],
        "size_bytes": attrs["size_bytes"],
        "baseline_size_bytes": baseline.size_bytes,
        "params": attrs["params"],
        "feasible": not over,
        "violations": over,
        "finetuned": attrs.get("finetuned", True),
        "verify_error": verify_error(trial, record),
        "not_applied": not_applied(trial, record),
        "plan": attrs["plan"],
        # Where the plan came from: a uniform warm start, an allocation, or the sampler.
        "origin": trial.user_attrs.get("warm_start") or "sampled",
        "best_alternative": None if best is None else best["label"],
        "best_alternative_ms": None if best is None else best["latency_ms"],
    }


def pareto_front(study: optuna.Study, record: StudyRecord | None = None) -> list[Candidate]:
    """The study's front, best accuracy first.

    The non-dominated trials among those within the budgets, with each trial's latency taken as
    measured wherever it was (the verify step, `--latency measured`) and as predicted elsewhere:
    a candidate that measures slower than predicted no longer hides the trials it dominated
    only on paper, and one predicted over the latency budget that measures within it enters.
    A candidate whose measured latency misses the budget stays on the front,
    marked infeasible, so the user sees the miss; so does one the verify step could not build,
    which hides no other trial. When no trial is within the budgets, the
    non-dominated trials of all, each marked `feasible: false` with its violations, so the user
    sees how close it came. Trials with identical figures (the same plan told twice) appear once.

    Args:
        study: the study.
        record: its record, when the caller has read it already (`record.read`).
    """
    record = record or read(study)
    if record.baseline is None:
        return []
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # Within the budgets as the search scored it, or as the verify step measured it.
    pool = [t for t in done if not violations(t) or not violations(t, record)] or done
    for t in pool:
        check_trial(study.study_name, t)
    rows = [candidate(t, record) for t in pool]
    built = [c for c in rows if c["verify_error"] is None]
    front = [built[i] for i in non_dominated([_point(c) for c in built])]
    # A plan the verify step could not build stays in view, marked, but hides no other trial.
    front += [
        c
        for c in rows
        if c["verify_error"] is not None and not any(dominates(_point(o), _point(c)) for o in built)
    ]
    front.sort(key=lambda c: (-c["accuracy"], c["latency_ms"], c["trial"]))
    seen: set[tuple[float, float, int]] = set()
    unique = []
    for c in front:
        figures = (c["accuracy"], c["latency_ms"], c["size_bytes"])
        if figures not in seen:
            seen.add(figures)
            unique.append(c)
    return unique


def baseline_row(study: optuna.Study, record: StudyRecord | None = None) -> Candidate | None:
    """The dense model as a row of the same shape as a candidate (trial None); `record`: the
    study's, when the caller has read it already."""
    b = (record or read(study)).baseline
    if b is None:
        return None
    return {
        "trial": None,
        "accuracy": b.accuracy,
        "candidate_accuracy": None,  # the dense model deploys as it is
        "baseline_accuracy": b.accuracy,
        "latency_ms": b.latency_ms,
        "predicted_ms": None,
        "measured_ms": b.latency_ms,
        "baseline_ms": b.latency_ms,
        "latency_ratio": 1.0,
        "size_bytes": b.size_bytes,
        "baseline_size_bytes": b.size_bytes,
        "params": b.params,
        "feasible": None,
        "violations": {},
        "finetuned": False,
        "verify_error": None,
        "not_applied": [],
        "plan": {"version": 1, "round_to": None, "layers": {}},
        "origin": "dense",
        "best_alternative": None,
        "best_alternative_ms": None,
    }


def alternatives(study: optuna.Study, record: StudyRecord | None = None) -> list[dict[str, Any]]:
    """The study's plain alternatives (label, latency_ms, ratio, accuracy; or label, error);
    `record`: the study's, when the caller has read it already."""
    return list((record or read(study)).alternatives)
