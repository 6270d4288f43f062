"""Early stopping: the "dominated beyond hope" rule on hand-made trials, the midway score that
leaves training as it was, and a real search whose stopped trials are PRUNED and off the front."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autocompress.api import search
from autocompress.config import Budget
from autocompress.errors import UserInputError
from autocompress.evaluate.finetune import finetune
from autocompress.evaluate.metrics import top1
from autocompress.export.rebuild import select_trial
from autocompress.optimize import early_stop, run
from autocompress.optimize.early_stop import (
    Record,
    describe_stopped,
    judge,
    rung_key,
    rung_steps,
    score_midway,
)
from autocompress.optimize.objectives import fixed_data_order
from autocompress.optimize.pareto import pareto_front
from autocompress.report.data import report_data
from autocompress.task import Task
from tests.conftest import make_tiny_resnet

F = "tests.factories"
KEY = rung_key(15, 60)


def _record(number: int, accuracy: float, latency_ms: float, size: float, at_rung: float) -> Record:
    return Record(number, accuracy, latency_ms, size, feasible=True, rungs={KEY: at_rung})


# Five finished trials; after step 15 of 60 one gained 0.02, the others 0.01.
RECORDS = [
    _record(0, 0.97, 2.0, 50_000, 0.95),
    _record(1, 0.95, 1.5, 40_000, 0.94),
    _record(2, 0.93, 1.0, 30_000, 0.92),
    _record(3, 0.90, 0.8, 20_000, 0.89),
    _record(4, 0.85, 0.6, 15_000, 0.84),
]


def test_the_rung_sits_at_a_quarter_of_the_fine_tune() -> None:
    assert rung_steps(60) == (15,)
    assert rung_steps(3) == (1,)
    assert rung_steps(2) == (1,)
    assert rung_steps(1) == ()


def test_a_trial_dominated_beyond_hope_is_stopped_and_told_by_whom() -> None:
    # Slower and larger than trial 2, and even 0.80 + any gain seen is below its 0.93.
    verdict = judge(KEY, 0.80, 1.2, 35_000, RECORDS)
    assert verdict.stop
    assert "trial 2" in verdict.reason


def test_a_promising_trial_is_not_stopped() -> None:
    # As slow and large as trial 2 but 0.92 at step 15 could still end above its 0.93.
    assert not judge(KEY, 0.92, 1.2, 35_000, RECORDS).stop
    # Faster than every finished trial: nothing can dominate it whatever its accuracy.
    assert not judge(KEY, 0.10, 0.5, 35_000, RECORDS).stop


def test_one_outlier_gain_does_not_make_every_trial_hopeful() -> None:
    # A sixth trial recovered 0.30 after the rung (a badly damaged plan); the 0.85 quantile
    # of the six gains is still 0.01, so 0.85 + 0.01 + margin stays below trial 2's 0.93.
    records = [*RECORDS, _record(5, 0.90, 0.3, 10_000, 0.60)]
    assert judge(KEY, 0.85, 1.2, 35_000, records).stop
    assert not judge(KEY, 0.85, 1.2, 35_000, records, quantile=1.0).stop


def test_nothing_stops_before_the_warm_up_count() -> None:
    verdict = judge(KEY, 0.10, 5.0, 90_000, RECORDS[:4])
    assert not verdict.stop and verdict.optimistic is None


def test_other_rungs_and_infeasible_trials_are_no_evidence() -> None:
    other = [
        Record(r.number, r.accuracy, r.latency_ms, r.size_bytes, True, {"5/15": 0.5})
        for r in RECORDS
    ]
    assert not judge(KEY, 0.10, 5.0, 90_000, other).stop
    over_budget = [
        Record(r.number, r.accuracy, r.latency_ms, r.size_bytes, False, r.rungs) for r in RECORDS
    ]
    assert not judge(KEY, 0.10, 5.0, 90_000, over_budget).stop


def test_below_the_accuracy_floor_stops_without_a_dominating_trial() -> None:
    verdict = judge(KEY, 0.60, 0.5, 10_000, RECORDS, floor=0.9)
    assert verdict.stop and "floor" in verdict.reason


def _study_of(records: list[Record]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for r in records:
        attrs = {"accuracy": r.accuracy, "latency_ms": r.latency_ms, "size_bytes": r.size_bytes}
        study.add_trial(
            optuna.trial.create_trial(
                values=[r.accuracy, r.latency_ms, r.size_bytes],
                user_attrs={**attrs, "rung_accuracy": dict(r.rungs)},
                constraints={"latency_ms": -1.0},
            )
        )
    return study


def test_a_rung_is_scored_only_where_the_score_could_stop_the_trial() -> None:
    calls = []

    def metric(model: torch.nn.Module, loader: DataLoader) -> float:
        calls.append(1)
        return 0.5

    task = _shuffled_task(metric)
    stopper = early_stop.EarlyStopper(_study_of(RECORDS))
    model = make_tiny_resnet().train()
    scores: dict[str, float] = {}
    # Faster than every finished trial: no accuracy could get it dominated, so no scoring.
    stopper.watch(model, task, steps=60, latency_ms=0.5, size_bytes=35_000, scores=scores)(15, 1.0)
    assert not calls and not scores
    # Slower and larger than trial 2: scored, and 0.5 is beyond hope.
    slow = stopper.watch(model, task, steps=60, latency_ms=1.2, size_bytes=35_000, scores=scores)
    with pytest.raises(early_stop.TrialStopped, match="dominated by trial 2"):
        slow(15, 1.0)
    assert calls == [1] and scores == {KEY: 0.5}
    # With an accuracy floor, every trial is scored: the floor can stop any of them.
    floored = early_stop.EarlyStopper(_study_of(RECORDS), floor=0.9)
    fast = floored.watch(model, task, steps=60, latency_ms=0.5, size_bytes=35_000, scores={})
    with pytest.raises(early_stop.TrialStopped, match="floor"):
        fast(15, 1.0)


def _shuffled_task(metric=top1) -> Task:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 16, 16, generator=g), torch.randint(0, 10, (96,), generator=g)
    train = DataLoader(
        TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    return Task("noise", train, val, x[:1], metric)


def test_a_midway_score_leaves_the_fine_tune_exactly_as_it_would_have_been() -> None:
    task = _shuffled_task()
    dense = make_tiny_resnet()
    plain, probed = copy.deepcopy(dense), copy.deepcopy(dense)
    seen = {}

    def on_step(step: int, loss: float) -> None:
        if step == 3:
            before = {k: v.clone() for k, v in probed.state_dict().items()}
            seen["score"] = score_midway(probed, task)
            assert probed.training
            after = probed.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)

    for model, callback in ((plain, None), (probed, on_step)):
        with fixed_data_order(task):  # both start from the same shuffling state
            finetune(model, dense, task, steps=6, on_step=callback)
    assert 0.0 <= seen["score"] <= 1.0
    a, b = plain.state_dict(), probed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_search_with_early_stop_prunes_trials_and_keeps_them_off_the_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rule itself is tested above; here every plan after the first is hopeless
    # (a floor at the dense accuracy, and no margin of hope), so the plumbing is exercised.
    monkeypatch.setattr(early_stop, "WARMUP_RECORDS", 1)
    monkeypatch.setattr(early_stop, "MARGIN", -1.0)
    # Timing is not what is tested here: skip the plain alternatives and the verify step.
    monkeypatch.setattr(run, "measure_alternatives", lambda *args, **kwargs: [])
    monkeypatch.setattr(run, "verify_front", lambda *args, **kwargs: 0)
    monkeypatch.chdir(tmp_path)  # autocompress.search writes its report under ./reports/
    space = tmp_path / "three-plans.yaml"
    space.write_text("version: 1\ndefaults:\n  keep_ratio: [1.0, 0.75, 0.5]\n")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = search(
        f"{F}:tiny_mlp", task=f"{F}:tiny_task", space=str(space), storage=storage, study="s",
        trials=8, finetune_steps=3, budget=Budget(latency_ms=1000, max_drop=0.0),
        show_progress=False, early_stop=True,
    )  # fmt: skip
    trials = optuna.load_study(study_name="s", storage=storage).trials
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert result.trials_stopped == len(stopped) >= 1
    assert result.trials_run == 8 and result.trials_failed == 0
    for t in stopped:
        assert t.user_attrs["stop_reason"] and t.user_attrs["stopped_at_step"] == 1
        assert {"accuracy", "latency_ms", "size_bytes", "plan"} <= t.user_attrs.keys()
    # A stopped plan drawn again is told PRUNED again with the first one's figures.
    for t in stopped:
        if "duplicate_of" in t.user_attrs:
            first = trials[t.user_attrs["duplicate_of"]]
            assert first.state == optuna.trial.TrialState.PRUNED
            assert t.user_attrs["stop_reason"] == first.user_attrs["stop_reason"]
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    firsts = [t for t in completed if "duplicate_of" not in t.user_attrs]
    assert all(set(t.user_attrs["rung_accuracy"]) == {"1/3"} for t in firsts)
    study = optuna.load_study(study_name="s", storage=storage)
    assert describe_stopped(study) == [
        f"{len(stopped)} trial{'s' if len(stopped) != 1 else ''} stopped early (dominated "
        "beyond hope; the report's timeline says by which trial)"
    ]
    on_front = {c["trial"] for c in pareto_front(study)}
    assert on_front and not on_front & {t.number for t in stopped}
    data = report_data(study)
    assert data["meta"]["trial_states"]["PRUNED"] == len(stopped)
    assert {r["trial"] for r in data["timeline"] if r["stop_reason"]} == {t.number for t in stopped}
    assert not {r["trial"] for r in data["trials"]} & {t.number for t in stopped}
    page = (tmp_path / "reports" / "s" / "index.html").read_text()
    assert "stopped early" in page
    with pytest.raises(UserInputError, match="stopped early"):
        select_trial(study, trial=stopped[0].number)
