"""The report's numbers as one JSON-ready dict: everything the page draws, and no drawing."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

import optuna

from autocompress.config import Budget, settings
from autocompress.optimize.pareto import alternatives, baseline_row, dominates, pareto_front
from autocompress.optimize.record import StudyRecord, measured_ms, read, violations
from autocompress.optimize.study import DEFAULT_STORAGE

# Predicted latency within this fraction of the measured one counts as a good prediction.
PREDICTION_BAND = 0.10

_HV_METHOD = (
    "Hypervolume of the feasible trials so far (exact, 3-D), in objectives normalised to the "
    "dense model: speed-up gain 1 - latency/dense latency, size gain 1 - size/dense size, and "
    "accuracy above the floor divided by (dense accuracy - floor). Reference point: the dense "
    "model's latency and size and the accuracy floor ({floor}). 1.0 would be a candidate as "
    "accurate as the dense model at zero latency and zero size."
)


def safe_dirname(study_name: str) -> str:
    """The study's name as one folder name: characters outside [A-Za-z0-9._-] become '_'.

    Args:
        study_name: any Optuna study name (it may hold '/', spaces or markup).

    Returns:
        A name safe for `reports/<name>/`; a plain name comes back unchanged.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", study_name).strip(".")
    return cleaned or "study"


def export_command(study_name: str, trial: int, storage_url: str | None = None) -> str:
    """The shell command that exports one trial, quoted for a POSIX shell.

    Args:
        study_name: the study.
        trial: the trial number.
        storage_url: the storage, when it is not the default one.

    Returns:
        E.g. `autocompress export --study digits-resnet-cpu --trial 7 --out reports/...`.
    """
    out = f"reports/{safe_dirname(study_name)}/trial-{trial}"
    parts = ["autocompress", "export", "--study", study_name, "--trial", str(trial)]
    if storage_url and storage_url != DEFAULT_STORAGE:
        parts += ["--storage", storage_url]
    parts += ["--out", out]
    return shlex.join(parts)


def hypervolume(points: Sequence[Sequence[float]]) -> float:
    """Exact volume dominated by `points` (every coordinate a gain, maximised) above the origin.

    Coordinates at or below zero add nothing. Sweeps the third axis and sums 2-D areas:
    exact, and fast for the few hundred points of a study.

    Args:
        points: (x, y, z) gains.

    Returns:
        The volume of the union of the boxes [0, x] x [0, y] x [0, z].
    """
    boxes = [tuple(max(0.0, float(c)) for c in p) for p in points]
    boxes = [b for b in boxes if min(b) > 0.0]
    levels = sorted({b[2] for b in boxes}, reverse=True)
    volume = 0.0
    for i, z in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else 0.0
        volume += (z - below) * _area([(b[0], b[1]) for b in boxes if b[2] >= z])
    return volume


def hypervolume_gain(
    accuracy: float, latency_ratio: float, size_ratio: float, *, dense_accuracy: float, floor: float
) -> tuple[float, float, float]:
    """A candidate's figures as the gains `hypervolume` maximises, normalised to the dense model.

    Speed-up gain 1 - latency/dense latency, size gain 1 - size/dense size, and accuracy above
    the floor divided by (dense accuracy - floor): the box from the reference point (dense
    latency, dense size, the floor) to (zero latency, zero size, dense accuracy) is 1.

    Args:
        accuracy: the candidate's score.
        latency_ratio: its latency / the dense model's.
        size_ratio: its size / the dense model's.
        dense_accuracy: the dense model's score.
        floor: the accuracy that counts as nothing (e.g. dense minus --max-drop).

    Returns:
        (latency gain, size gain, accuracy gain); gains at or below zero add no volume.
    """
    span = dense_accuracy - floor
    return (1.0 - latency_ratio, 1.0 - size_ratio, (accuracy - floor) / span if span > 0 else 0.0)


def _area(points: list[tuple[float, float]]) -> float:
    """Area dominated by 2-D gain points above the origin."""
    area, best_y = 0.0, 0.0
    ordered = sorted(points, key=lambda p: (-p[0], -p[1]))
    for i, (x, y) in enumerate(ordered):
        best_y = max(best_y, y)
        next_x = ordered[i + 1][0] if i + 1 < len(ordered) else 0.0
        area += (x - next_x) * best_y
    return area


def _figures(trial: optuna.trial.FrozenTrial, record: StudyRecord) -> tuple[float, float, float]:
    """(accuracy, latency, size) as the front compares them: latency measured where it was."""
    attrs, values = trial.user_attrs, trial.values or [None, None, None]
    measured = measured_ms(trial, record)
    return (
        float(attrs.get("accuracy", values[0])),
        float(measured if measured is not None else attrs.get("latency_ms", values[1])),
        float(attrs.get("size_bytes", values[2])),
    )


def _trial_rows(
    study: optuna.Study, record: StudyRecord, front: list[dict[str, Any]], storage_url: str | None
) -> list[dict[str, Any]]:
    """Every COMPLETE trial with the flags the front plot greys by."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    over = {t.number: violations(t, record) for t in done}
    figures = {t.number: _figures(t, record) for t in done}
    pool = [figures[t.number] for t in ([t for t in done if not over[t.number]] or done)]
    on_front = {c["trial"] for c in front}
    rows = []
    for t in done:
        accuracy, latency_ms, size = figures[t.number]
        is_feasible = not over[t.number]
        dominated = any(dominates(p, (accuracy, latency_ms, size)) for p in pool)
        if t.number in on_front:
            category = "front"
        elif not is_feasible:
            category = "infeasible"
        else:
            category = "dominated"
        attrs = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "accuracy": accuracy,
                "latency_ms": latency_ms,
                "measured_ms": measured_ms(t, record),
                "predicted_ms": attrs.get("predicted_ms"),
                "size_bytes": size,
                "params": attrs.get("params"),
                "feasible": is_feasible,
                "violations": over[t.number],
                "dominated": dominated,
                "on_front": t.number in on_front,
                "category": category,
                "finetuned": attrs.get("finetuned", True),
                "finetune_undone": bool(attrs.get("finetune_undone", False)),
                "duplicate_of": attrs.get("duplicate_of"),
                "warm_start": attrs.get("warm_start"),
                "export": export_command(study.study_name, t.number, storage_url),
            }
        )
    return rows


def _accuracy_floor(record: StudyRecord) -> float | None:
    if record.baseline is None or record.budget is None or record.budget.max_drop is None:
        return None
    return record.baseline.accuracy - record.budget.max_drop


def _hypervolume_history(
    study: optuna.Study, record: StudyRecord, floor: float | None
) -> dict[str, Any]:
    """Hypervolume after each trial number (failed and infeasible trials add nothing)."""
    hv_floor = 0.0 if floor is None else floor
    caption = _HV_METHOD.format(
        floor=f"dense accuracy minus --max-drop, {hv_floor:.4g}"
        if floor is not None
        else "0, since the study has no --max-drop"
    )
    result: dict[str, Any] = {"trials": [], "values": [], "floor": hv_floor, "caption": caption}
    baseline = record.baseline
    if baseline is None:
        return result
    points: list[tuple[float, float, float]] = []
    value = 0.0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE and not violations(t, record):
            accuracy, latency_ms, size = _figures(t, record)
            gain = hypervolume_gain(
                accuracy,
                latency_ms / baseline.latency_ms,
                size / baseline.size_bytes,
                dense_accuracy=baseline.accuracy,
                floor=hv_floor,
            )
            if min(gain) > 0 and not any(_covers(p, gain) for p in points):
                points = [p for p in points if not _covers(gain, p)] + [gain]
                value = hypervolume(points)
        result["trials"].append(t.number)
        result["values"].append(value)
    return result


def _covers(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when gain point `a` is at least `b` everywhere (b adds no volume beside a)."""
    return all(x >= y for x, y in zip(a, b, strict=True))


def _timeline(study: optuna.Study) -> list[dict[str, Any]]:
    """Start offset and duration of every trial that started, in seconds, why a trial
    failed or was stopped early (PRUNED), and what its plan could not apply."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    if not trials:
        return []
    first = min(t.datetime_start for t in trials if t.datetime_start is not None)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        assert t.datetime_start is not None
        end = t.datetime_complete
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "start": t.datetime_start.isoformat(timespec="seconds"),
                "start_s": (t.datetime_start - first).total_seconds(),
                "duration_s": None if end is None else (end - t.datetime_start).total_seconds(),
                "fail_reason": t.user_attrs.get("fail_reason"),
                "stop_reason": t.user_attrs.get("stop_reason"),
                "not_applied": t.user_attrs.get("not_applied", []),
            }
        )
    return rows


def _natural_key(name: str) -> list[Any]:
    """'layer10.conv1' after 'layer2.conv1': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _heatmaps(study: optuna.Study, front: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-knob grids of the front's plans: one row per layer, one column per candidate."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    layers: set[str] = set()
    for t in done:
        layers.update(t.user_attrs.get("plan", {}).get("layers", {}))
    names = sorted(layers, key=_natural_key)
    knobs = sorted({k for c in front for cfg in c["plan"]["layers"].values() for k in cfg})
    known = settings()
    grids = {}
    for knob in knobs:
        default = known[knob].default if knob in known else None
        grids[knob] = {
            "identity": default,
            "values": [
                [c["plan"]["layers"].get(layer, {}).get(knob, default) for c in front]
                for layer in names
            ],
        }
    return {"layers": names, "trials": [c["trial"] for c in front], "knobs": grids}


def _decision_label(layers: Sequence[str]) -> str:
    """A decision's row label: its layer, or its first layer and how many share it."""
    return layers[0] if len(layers) == 1 else f"{layers[0]} +{len(layers) - 1} coupled"


def _sensitivity(record: StudyRecord) -> dict[str, Any] | None:
    """The per-layer sensitivity as grids: one row per decision (a layer or a coupling group),
    one column per level; the metric's drop in points and the output distortion, None where a
    level was not measured for that decision."""
    measured = record.sensitivity
    if not measured or not measured.get("rows"):
        return None
    rows: dict[tuple[str, ...], str] = {}
    levels: dict[tuple[str, Any], str] = {}
    for r in measured["rows"]:
        rows.setdefault(tuple(r["layers"]), _decision_label(r["layers"]))
        levels.setdefault((r["setting"], r["value"]), f"{r['setting']} {r['value']}")
    row_keys = sorted(rows, key=lambda k: _natural_key(k[0]))
    level_keys = list(levels)
    drop: list[list[float | None]] = [[None] * len(level_keys) for _ in row_keys]
    distortion: list[list[float | None]] = [[None] * len(level_keys) for _ in row_keys]
    where = {k: i for i, k in enumerate(row_keys)}
    column = {k: j for j, k in enumerate(level_keys)}
    for r in measured["rows"]:
        i, j = where[tuple(r["layers"])], column[(r["setting"], r["value"])]
        drop[i][j] = 100.0 * float(r["drop"])
        distortion[i][j] = r.get("distortion")
    return {
        "rows": [rows[k] for k in row_keys],
        "levels": [levels[k] for k in level_keys],
        "drop_points": drop,
        "distortion": distortion,
        "metric_name": measured.get("metric_name", record.metric_name),
        "dense": measured.get("dense"),
        "file": measured.get("file"),
    }


def _meta(study: optuna.Study, record: StudyRecord) -> dict[str, Any]:
    identity = record.identity
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {
        "study": study.study_name,
        "model": identity.get("model"),
        "task": identity.get("task"),
        "target": identity.get("target"),
        "threads": identity.get("threads"),
        "batch_size": identity.get("batch_size"),
        "metric_name": record.metric_name,
        "fingerprint": dict(record.fingerprint),
        "budget_text": "no budget recorded" if record.budget is None else record.budget.describe(),
        "space": dict(record.space),
        "versions": dict(record.versions),
        "trial_states": states,
        "trials_total": sum(states.values()),
    }


def report_data(study: optuna.Study, *, storage_url: str | None = None) -> dict[str, Any]:
    """Every number the report shows, JSON-ready, computed without any plotting library.

    Args:
        study: a study written by `autocompress search` (see `optimize/run.py` for its attrs).
        storage_url: the storage it was read from; named in export commands when not default.

    Returns:
        A dict with `meta`, `baseline` (the dense row or None), `alternatives` (the plain
        alternatives measured beside the front), `budget` (limits and the
        accuracy floor), `front` (exactly `pareto_front(study)`, as `show --json` prints it),
        `trials` (every complete trial with feasible / dominated / category flags and its
        export command), `exports` (trial -> command for the front), `predicted` (trials that
        carry `predicted_ms`), `heatmaps`, `sensitivity` (per-layer grids, or None when the
        search allocated no plans), `hypervolume` and `timeline`.
    """
    record = read(study)
    budget = record.budget or Budget()
    floor = _accuracy_floor(record)
    front = pareto_front(study, record)
    trials = _trial_rows(study, record, front, storage_url)
    predicted = [
        {"trial": r["trial"], "predicted_ms": r["predicted_ms"], "measured_ms": r["measured_ms"]}
        for r in trials
        if r["predicted_ms"] is not None and r["measured_ms"] is not None
    ]
    return {
        "meta": _meta(study, record),
        "baseline": baseline_row(study, record),
        "alternatives": alternatives(study, record),
        "budget": {
            "latency_ms": budget.latency_ms,
            "size_bytes": budget.size_bytes,
            "max_drop": budget.max_drop,
            "accuracy_floor": floor,
        },
        "front": front,
        "trials": trials,
        "exports": {
            str(c["trial"]): export_command(study.study_name, c["trial"], storage_url)
            for c in front
        },
        "predicted": {"points": predicted, "band": PREDICTION_BAND},
        "heatmaps": _heatmaps(study, front),
        "sensitivity": _sensitivity(record),
        "hypervolume": _hypervolume_history(study, record, floor),
        "timeline": _timeline(study),
    }
