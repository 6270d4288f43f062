"""A small but realistic study, written straight into SQLite the way `search()` writes one.

No model is trained and nothing is timed: trial figures follow a simple law of the plan's keep
ratios (smaller plans are faster, smaller and less accurate) with seeded noise.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

CHOICES = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
# coupling group (the knob) -> the layers it prunes together, like digits-resnet's groups
GROUPS = {
    "stem.0": ["stem.0", "layer1.0.conv2", "layer1.1.conv2"],
    "layer1.0.conv1": ["layer1.0.conv1"],
    "layer1.1.conv1": ["layer1.1.conv1"],
    "layer2.0.conv1": ["layer2.0.conv1"],
    "layer2.0.conv2": ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"],
    "layer2.1.conv1": ["layer2.1.conv1"],
    "layer10.conv1": ["layer10.conv1"],
}
BASELINE = {"accuracy": 0.99, "latency_ms": 2.4, "size_bytes": 1_100_000, "params": 272_000}
BUDGET = {"latency_ms": 1.6, "size_bytes": 700_000, "max_drop": 0.05}
START = dt.datetime(2026, 1, 5, 9, 30, 0)


def _figures(keeps: dict[str, float], rng: random.Random) -> dict[str, Any]:
    """A plan's figures: latency ~ keep^1.5, size ~ keep^2, accuracy lost ~ (1 - keep)^1.5."""
    mean_keep = sum(keeps.values()) / len(keeps)
    latency_ratio = (0.15 + 0.85 * mean_keep**1.5) * rng.uniform(0.95, 1.05)
    size = int(BASELINE["size_bytes"] * (0.05 + 0.95 * mean_keep**2))
    drop = 0.12 * (1 - mean_keep) ** 1.5 + 0.04 * (1 - min(keeps.values())) ** 2
    drop += rng.uniform(0.0, 0.01)
    return {
        "accuracy": max(0.1, BASELINE["accuracy"] - drop),
        "latency_ratio": latency_ratio,
        "latency_ms": latency_ratio * BASELINE["latency_ms"],
        "size_bytes": size,
        "params": size // 4,
    }


def _plan(keeps: dict[str, float]) -> dict[str, Any]:
    layers = {
        layer: {"keep_ratio": keep}
        for group, keep in keeps.items()
        if keep < 1.0
        for layer in GROUPS[group]
    }
    return {"version": 1, "round_to": None, "layers": dict(sorted(layers.items()))}


def _constraints(figures: dict[str, Any], budget: dict[str, Any]) -> dict[str, float]:
    values = {}
    if budget.get("latency_ms") is not None:
        values["latency_ms"] = figures["latency_ms"] - budget["latency_ms"]
    if budget.get("size_bytes") is not None:
        values["size_bytes"] = float(figures["size_bytes"] - budget["size_bytes"])
    if budget.get("max_drop") is not None:
        values["accuracy_drop"] = BASELINE["accuracy"] - figures["accuracy"] - budget["max_drop"]
    return values


def make_study(
    storage_url: str,
    name: str = "demo-cpu",
    *,
    complete: int = 30,
    failed: int = 2,
    seed: int = 0,
    budget: dict[str, Any] | None = None,
    predicted: bool = False,
) -> optuna.Study:
    """A study shaped like one `autocompress search` wrote: user attrs, constraints, plans.

    Args:
        storage_url: an RDB URL, e.g. sqlite:///tmp/x.db.
        name: the study name.
        complete: COMPLETE trials (the first two are uniform warm starts, one is a duplicate).
        failed: FAIL trials with a `fail_reason`, spread among the others.
        seed: the noise seed.
        budget: the study's budget dict; default BUDGET.
        predicted: give every trial a `predicted_ms` (no study has one yet).

    Returns:
        The study, loaded from `storage_url`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = dict(BUDGET if budget is None else budget)
    rng = random.Random(seed)
    study = optuna.create_study(
        study_name=name, storage=storage_url, directions=["maximize", "minimize", "minimize"]
    )
    attrs = {
        "identity": {
            "model": "digits-resnet",
            "target": "cpu",
            "threads": 1,
            "batch_size": 1,
            "task": "digits-32x32",
        },
        "baseline": BASELINE,
        "fingerprint": {
            "cpu_model": "AMD EPYC",
            "logical_cores": "2",
            "threads": "1",
            "torch_version": "2.13.0+cpu",
            "runtime": "pytorch-eager",
        },
        "budget": budget,
        "space": {"source": "default.yaml", "knobs": len(GROUPS)},
        "versions": {
            "python": "3.11.7",
            "torch": "2.13.0+cpu",
            "optuna": optuna.__version__,
            "torch_pruning": "1.6.0",
        },
        "metric_name": "top1",
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    distributions = {f"keep_ratio:{g}": CategoricalDistribution(CHOICES) for g in GROUPS}
    fail_at = {round((i + 1) * (complete + failed) / (failed + 1)) for i in range(failed)}
    clock, seen, done = START, {}, 0
    for number in range(complete + failed):
        duration = dt.timedelta(seconds=rng.uniform(3.0, 9.0))
        if number in fail_at:
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                user_attrs={"fail_reason": "RuntimeError: <pruning> failed: shapes 3 & 4 differ"},
            )
        else:
            warm = done < 2
            keeps = (
                {g: (0.75, 0.5)[done] for g in GROUPS}
                if warm
                else {g: rng.choice(CHOICES) for g in GROUPS}
            )
            if done == 5:  # the sampler proposed a plan it had already scored
                keeps = dict(seen[next(iter(seen))][0])
            key = tuple(sorted(keeps.items()))
            user_attrs: dict[str, Any]
            if key in seen:
                user_attrs = {**seen[key][1], "duplicate_of": seen[key][2]}
            else:
                user_attrs = {
                    **_figures(keeps, rng),
                    "plan": _plan(keeps),
                    "finetuned": True,
                    "finetune_s": duration.total_seconds() - 1.0,
                }
                if user_attrs["latency_ms"] > 1.5 * budget.get("latency_ms", float("inf")):
                    user_attrs["finetuned"] = False
                seen[key] = (keeps, user_attrs, number)
            if warm:
                user_attrs["warm_start"] = "uniform"
            if predicted:  # as if measured too (`--latency measured` or the verify step)
                user_attrs["measured_ms"] = user_attrs["latency_ms"]
                user_attrs["predicted_ms"] = user_attrs["latency_ms"] * rng.uniform(0.85, 1.15)
            trial = optuna.trial.create_trial(
                values=[user_attrs["accuracy"], user_attrs["latency_ms"], user_attrs["size_bytes"]],
                params={f"keep_ratio:{g}": k for g, k in keeps.items()},
                distributions=distributions,
                user_attrs=user_attrs,
                system_attrs={"NSGAIISampler:generation": done // 8},
                constraints=_constraints(user_attrs, budget),
            )
            done += 1
        trial.datetime_start = clock
        trial.datetime_complete = clock + duration
        clock += duration + dt.timedelta(seconds=0.2)
        study.add_trial(trial)
    return optuna.load_study(study_name=name, storage=storage_url)


@pytest.fixture(scope="session")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite storage URL holding the 30-trial study `demo-cpu` (made once per session)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report-db') / 'studies.db'}"
    make_study(url)
    return url


@pytest.fixture
def demo_study(study_db: str) -> optuna.Study:
    """The 30 complete + 2 failed trial study from `study_db`."""
    return optuna.load_study(study_name="demo-cpu", storage=study_db)


def storage_path(url: str) -> Path:
    """The file behind a sqlite:/// URL."""
    return Path(url.removeprefix("sqlite:///"))
