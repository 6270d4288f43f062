"""The Pareto front of a study as plain numbers: what `show` prints and the report draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from autocompress.errors import StudyError

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


def _violation(trial: optuna.trial.FrozenTrial) -> float:
    return sum(max(0.0, v) for v in trial.constraints.values())


def measured_ms(trial: optuna.trial.FrozenTrial, verified: dict[str, Any]) -> float | None:
    """A trial's measured latency: from the search (`--latency measured`) or the verify step."""
    attrs = trial.user_attrs
    if "measured_ms" in attrs:
        return attrs["measured_ms"]
    # A plan told again (`duplicate_of`) was measured under its first trial's number.
    for number in (trial.number, attrs.get("duplicate_of")):
        if number is not None and str(number) in verified:
            return verified[str(number)]["measured_ms"]
    if "predicted_ms" not in attrs and "latency_ms" in attrs:
        return attrs["latency_ms"]  # studies from before the predictor measured every trial
    return None


def _verified(trial: optuna.trial.FrozenTrial, verified: dict[str, Any]) -> dict[str, Any]:
    """The verify step's record of a trial (or of the trial whose plan it repeats); {} if none."""
    for number in (trial.number, trial.user_attrs.get("duplicate_of")):
        if number is not None and str(number) in verified:
            return verified[str(number)]
    return {}


def verify_error(trial: optuna.trial.FrozenTrial, verified: dict[str, Any]) -> str | None:
    """Why the verify step could not build or time a trial's plan; None when it did (or not yet)."""
    return _verified(trial, verified).get("error")


def not_applied(trial: optuna.trial.FrozenTrial, verified: dict[str, Any]) -> list[str]:
    """What a trial's plan could not apply (`compress.apply.plan_notes`): while it was built
    for the fine-tune, then in its deployable build at the verify step."""
    notes = [
        *trial.user_attrs.get("not_applied", ()),
        *_verified(trial, verified).get("not_applied", ()),
    ]
    return list(dict.fromkeys(notes))


def candidate(
    trial: optuna.trial.FrozenTrial,
    baseline: dict[str, Any],
    *,
    verified: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    alternatives: Sequence[dict[str, Any]] = (),
) -> Candidate:
    """One trial as the figures a person compares (the `show --json` schema).

    Args:
        trial: a complete trial.
        baseline: the study's dense figures.
        verified: the study's verify-step measurements (trial number -> figures).
        budget: the study's budget; a measured latency over it makes the candidate infeasible.
        alternatives: the study's plain alternatives (`optimize.alternatives`).

    Returns:
        The candidate; `latency_ms` is the measured latency where there is one, else predicted;
        `verify_error`: why the verify step could not build or time it (then infeasible);
        `not_applied`: the parts of its plan that layers could not take (`not_applied`);
        `best_alternative` (label) and `best_alternative_ms`: the plain alternative it is
        compared with (`alternatives.best_alternative`), None when the study measured none.
    """
    from autocompress.optimize.alternatives import best_alternative

    attrs = trial.user_attrs
    measured = measured_ms(trial, verified or {})
    error = verify_error(trial, verified or {})
    violations = {k: v for k, v in trial.constraints.items() if v > 0}
    if error is not None:
        violations["verify"] = 1.0  # not built, so not deployable as searched
    limit = (budget or {}).get("latency_ms")
    if measured is not None and limit is not None and measured > limit:
        violations["latency_ms"] = measured - limit
    elif measured is not None and limit is not None:
        violations.pop("latency_ms", None)
    best = best_alternative(alternatives, attrs["accuracy"])
    return {
        "trial": trial.number,
        "accuracy": attrs["accuracy"],
        "baseline_accuracy": baseline["accuracy"],
        "latency_ms": measured if measured is not None else attrs["latency_ms"],
        "predicted_ms": attrs.get("predicted_ms"),
        "measured_ms": measured,
        "baseline_ms": baseline["latency_ms"],
        "latency_ratio": attrs["latency_ratio"],
        "size_bytes": attrs["size_bytes"],
        "baseline_size_bytes": baseline["size_bytes"],
        "params": attrs["params"],
        "feasible": not violations,
        "violations": violations,
        "finetuned": attrs.get("finetuned", True),
        "verify_error": error,
        "not_applied": not_applied(trial, verified or {}),
        "plan": attrs["plan"],
        # Where the plan came from: a uniform warm start, an allocation, or the sampler.
        "origin": trial.user_attrs.get("warm_start") or "sampled",
        "best_alternative": None if best is None else best["label"],
        "best_alternative_ms": None if best is None else best["latency_ms"],
    }


def pareto_front(study: optuna.Study) -> list[Candidate]:
    """The study's front, best accuracy first.

    The non-dominated trials among those within the budgets, with each trial's latency taken as
    measured wherever it was (the verify step, `--latency measured`) and as predicted elsewhere:
    a candidate that measures slower than predicted no longer hides the trials it dominated
    only on paper. A candidate whose measured latency misses the budget stays on the front,
    marked infeasible, so the user sees the miss; so does one the verify step could not build,
    which hides no other trial. When no trial is within the budgets, the
    non-dominated trials of all, each marked `feasible: false` with its violations, so the user
    sees how close it came. Trials with identical figures (the same plan told twice) appear once.
    """
    baseline = study.user_attrs.get("baseline")
    if baseline is None:
        return []
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pool = [t for t in done if _violation(t) <= 0.0] or done
    extra = {
        "verified": study.user_attrs.get("verified") or {},
        "budget": study.user_attrs.get("budget") or {},
        "alternatives": study.user_attrs.get("alternatives") or [],
    }
    for t in pool:
        _check_figures(study.study_name, t)
    rows = [candidate(t, baseline, **extra) for t in pool]
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


_NUMBERS = ("accuracy", "latency_ms", "latency_ratio", "size_bytes")


def _check_figures(study: str, trial: optuna.trial.FrozenTrial) -> None:
    """Refuse a complete trial whose figures are not numbers (a study edited by hand, or
    written by another program) before any of them is compared.

    Raises:
        StudyError: naming the trial, the attribute and its value.
    """
    attrs = trial.user_attrs
    for key in _NUMBERS:
        value = attrs.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StudyError(
                f"trial {trial.number} of study {study!r} holds {key}={str(value)[:40]!r}, not a "
                "number: the study was changed outside autocompress; delete that trial or the study"
            )
    if not isinstance(attrs.get("plan"), dict):
        raise StudyError(
            f"trial {trial.number} of study {study!r} holds no plan: the study was changed "
            "outside autocompress; delete that trial or the study"
        )


def baseline_row(study: optuna.Study) -> Candidate | None:
    """The dense model as a row of the same shape as a candidate (trial None)."""
    b = study.user_attrs.get("baseline")
    if b is None:
        return None
    return {
        "trial": None,
        "accuracy": b["accuracy"],
        "baseline_accuracy": b["accuracy"],
        "latency_ms": b["latency_ms"],
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
        "verify_error": None,
        "not_applied": [],
        "plan": {"version": 1, "round_to": None, "layers": {}},
        "origin": "dense",
        "best_alternative": None,
        "best_alternative_ms": None,
    }


def alternatives(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's plain alternatives (label, latency_ms, ratio, accuracy; or label, error)."""
    return list(study.user_attrs.get("alternatives") or [])
