"""The study record: what a search stores on its Optuna study beside the trials' values.

Everything autocompress keeps in a study's attributes is written and read here, so the
search, `show`, the report and `export` agree on one schema and on one judgement of
feasibility (`violations`). The record carries its version (`RECORD_VERSION`, attribute
`record_version`); studies written before it was recorded read as version 1.

Study attributes (all JSON): `identity` (model, task, target, threads, batch size), `budget`,
`baseline` (the dense figures), `fingerprint` (of the target the baseline was timed on),
`alternatives` (plain runtime models timed beside the front), `verified` (trial number ->
the verify step's figures), `sensitivity` (the per-layer measurement the allocations came
from), `finetune_steps`, `metric_name`, `space`, `versions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from autocompress.config import Budget
from autocompress.errors import StudyError

RECORD_VERSION = 1
# The figures every complete trial records, all numbers (`check_trial`).
TRIAL_NUMBERS = ("accuracy", "latency_ms", "latency_ratio", "size_bytes")


@dataclass(frozen=True)
class Baseline:
    """The dense model's figures, measured once per study."""

    accuracy: float
    latency_ms: float
    size_bytes: int
    params: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class StudyRecord:
    """A study's attributes, read once (`read`).

    Args:
        name: the study's name.
        version: the record's version.
        identity: model, task, target, threads and batch size the study was made for.
        budget: the search's budgets; None before a search recorded them.
        baseline: the dense model's figures; None before the search measured them.
        fingerprint: the target the baseline was timed on.
        alternatives: the plain alternatives (label, latency_ms, ratio, accuracy; or label,
            error), in the order they were measured.
        verified: trial number (as a string, JSON's keys) -> the verify step's figures
            (`measured_ms`, `ratio`, `predicted_ms`; or `error`; `not_applied` where a part of
            the plan was not applied in the deployable build).
        sensitivity: the per-layer sensitivity the allocated plans came from (`metric_name`,
            `dense`, `rows` as `evaluate.sensitivity.Sensitivity` has them, `file`); None when
            the search allocated none.
        finetune_steps: the study-wide fine-tune steps (each trial records its own too).
        metric_name: the task metric's name.
        space: the search space's source and knob count.
        versions: the library versions the search ran with.
    """

    name: str
    version: int = RECORD_VERSION
    identity: Mapping[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    baseline: Baseline | None = None
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    alternatives: tuple[dict[str, Any], ...] = ()
    verified: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    sensitivity: Mapping[str, Any] | None = None
    finetune_steps: int | None = None
    metric_name: str = "accuracy"
    space: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)

    def dense(self) -> Baseline:
        """The dense model's figures.

        Raises:
            StudyError: the study has none yet (its first search stopped before measuring them).
        """
        if self.baseline is None:
            raise StudyError(
                f"study {self.name!r} has no dense figures yet; run autocompress search on it first"
            )
        return self.baseline

    def verified_figures(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The verify step's record of a trial, or of the trial whose plan it repeats; {}."""
        for number in (trial.number, trial.user_attrs.get("duplicate_of")):
            if number is not None and str(number) in self.verified:
                return self.verified[str(number)]
        return {}


def read(study: optuna.Study) -> StudyRecord:
    """The study's record, with defaults for what an older or unfinished study lacks."""
    attrs = study.user_attrs
    baseline = attrs.get("baseline")
    budget = attrs.get("budget")
    return StudyRecord(
        name=study.study_name,
        version=int(attrs.get("record_version", 1)),
        identity=dict(attrs.get("identity") or {}),
        budget=None
        if budget is None
        else Budget(**{k: budget.get(k) for k in ("latency_ms", "size_bytes", "max_drop")}),
        baseline=None if baseline is None else _baseline(study.study_name, baseline),
        fingerprint=dict(attrs.get("fingerprint") or {}),
        alternatives=tuple(attrs.get("alternatives") or ()),
        verified=dict(attrs.get("verified") or {}),
        sensitivity=attrs.get("sensitivity"),
        finetune_steps=attrs.get("finetune_steps"),
        metric_name=attrs.get("metric_name", "accuracy"),
        space=dict(attrs.get("space") or {}),
        versions=dict(attrs.get("versions") or {}),
    )


def _baseline(study_name: str, data: Any) -> Baseline:
    try:
        return Baseline(**data)
    except TypeError:
        raise StudyError(
            f"study {study_name!r} holds dense figures autocompress did not write "
            f"({str(data)[:80]}): the study was changed outside autocompress; use another --study"
        ) from None


def is_ours(study: optuna.Study) -> bool:
    """Whether the study holds an autocompress identity (written when it was created)."""
    return "identity" in study.user_attrs


def write_identity(study: optuna.Study, identity: Mapping[str, Any]) -> None:
    """Record what the study is made for (once, right after it is created)."""
    study.set_user_attr("identity", dict(identity))
    study.set_user_attr("record_version", RECORD_VERSION)


def write_setup(
    study: optuna.Study,
    *,
    budget: Budget,
    space: Mapping[str, Any],
    versions: Mapping[str, str],
    metric_name: str,
    finetune_steps: int,
) -> None:
    """Record a search's settings (each search of the study writes its own over the last)."""
    study.set_user_attr("budget", budget.to_dict())
    study.set_user_attr("space", dict(space))
    study.set_user_attr("versions", dict(versions))
    study.set_user_attr("metric_name", metric_name)
    study.set_user_attr("finetune_steps", finetune_steps)


def write_baseline(study: optuna.Study, baseline: Baseline, fingerprint: Mapping[str, Any]) -> None:
    """Record the dense figures and the target they were timed on."""
    study.set_user_attr("baseline", baseline.to_dict())
    study.set_user_attr("fingerprint", dict(fingerprint))


def write_alternatives(study: optuna.Study, rows: list[dict[str, Any]]) -> None:
    """Record the plain alternatives measured beside the front."""
    study.set_user_attr("alternatives", rows)


def write_verified(study: optuna.Study, verified: Mapping[str, dict[str, Any]]) -> None:
    """Record the verify step's figures (trial number as a string -> figures)."""
    study.set_user_attr("verified", dict(verified))


def write_sensitivity(
    study: optuna.Study, *, metric_name: str, dense: float, rows: list[dict[str, Any]], file: str
) -> None:
    """Record the per-layer sensitivity the allocated plans came from (for the report)."""
    study.set_user_attr(
        "sensitivity", {"metric_name": metric_name, "dense": dense, "rows": rows, "file": file}
    )


def measured_ms(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> float | None:
    """A trial's measured latency: from the search (`--latency measured`) or the verify step."""
    attrs = trial.user_attrs
    if "measured_ms" in attrs:
        return attrs["measured_ms"]
    measured = record.verified_figures(trial).get("measured_ms")
    if measured is not None:
        return measured
    if "predicted_ms" not in attrs and "latency_ms" in attrs:
        return attrs["latency_ms"]  # studies from before the predictor measured every trial
    return None


def reference_to_dense(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> float | None:
    """The ratio to the dense model of the model a trial's measured latency was timed against
    (the dense model's twin, `Target.reference_for`), by which the study carried it to the
    dense model; None where the trial was not measured, or before studies recorded it."""
    measurement = trial.user_attrs.get("measurement") or {}
    if "to_dense" in measurement:
        return measurement["to_dense"]
    return record.verified_figures(trial).get("to_dense")


def verify_error(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> str | None:
    """Why the verify step could not build or time a trial's plan; None when it did (or not yet)."""
    return record.verified_figures(trial).get("error")


def violations(
    trial: optuna.trial.FrozenTrial, record: StudyRecord | None = None
) -> dict[str, float]:
    """How far a complete trial is over each budget: the one judgement of feasibility.

    The trial's own constraints (as the search scored it, latency predicted or measured), then,
    with the record, the verify step's word: a latency measured there replaces the one the
    search scored, and a plan it could not build is over (`verify`).

    Args:
        trial: a complete trial.
        record: the study's record; None judges on the trial's own figures (during the search).

    Returns:
        Budget name -> amount over it; empty when the trial is feasible.
    """
    over = {k: v for k, v in trial.constraints.items() if v > 0}
    if record is None:
        return over
    if verify_error(trial, record) is not None:
        over["verify"] = 1.0  # not built, so not deployable as searched
    measured = measured_ms(trial, record)
    limit = None if record.budget is None else record.budget.latency_ms
    if measured is not None and limit is not None:
        over.pop("latency_ms", None)
        if measured > limit:
            over["latency_ms"] = measured - limit
    return over


def check_trial(study_name: str, trial: optuna.trial.FrozenTrial) -> None:
    """Refuse a complete trial whose figures are not numbers or that holds no plan (a study
    edited by hand, or written by another program) before any of them is compared.

    Raises:
        StudyError: naming the trial, the attribute and its value.
    """
    attrs = trial.user_attrs
    for key in TRIAL_NUMBERS:
        value = attrs.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StudyError(
                f"trial {trial.number} of study {study_name!r} holds {key}={str(value)[:40]!r}, "
                "not a number: the study was changed outside autocompress; delete that trial or "
                "the study"
            )
    if not isinstance(attrs.get("plan"), dict):
        raise StudyError(
            f"trial {trial.number} of study {study_name!r} holds no plan: the study was changed "
            "outside autocompress; delete that trial or the study"
        )
