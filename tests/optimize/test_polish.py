"""Polishing: a search's last trials fine-tune the fastest plans near the floor for longer.

The rules on hand-made trials (the refiner's space, tests/optimize/test_refine.py), then a
real search whose last trial polishes a plan.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autocompress.config import POLISH_STEPS_FACTOR, Budget
from autocompress.errors import UserInputError
from autocompress.optimize import polish, record, run
from autocompress.optimize.polish import SLACK, Polisher
from autocompress.optimize.refine import Refiner
from autocompress.optimize.run import search
from autocompress.space.uniform import uniform_params
from tests.optimize.test_allocate import KNOBS, cost, predict_ms
from tests.optimize.test_refine import scored

F = "tests.factories"
DENSE, MAX_DROP, STEPS = 0.95, 0.01, 60  # floor 0.94; polished within 3 points: 0.92
POLISHER = Polisher(trials=3, steps=STEPS, dense=DENSE, max_drop=MAX_DROP)
DENSE_PLAN = uniform_params(KNOBS, {})
INT8 = uniform_params(KNOBS, {"weight_bits": 8, "act_bits": 8})
KEEP = {
    r: uniform_params(KNOBS, {"keep_ratio": r, "weight_bits": 8, "act_bits": 8})
    for r in (0.75, 0.5)
}


def trial(number: int, params: dict, accuracy: float, **attrs: object) -> optuna.trial.FrozenTrial:
    """A complete trial fine-tuned for the study's steps (or as `attrs` say)."""
    return scored(number, params, accuracy, **{"finetune_steps": STEPS, **attrs})


def polished(
    number: int, source: optuna.trial.FrozenTrial, accuracy: float
) -> optuna.trial.FrozenTrial:
    attrs = {"warm_start": "polished", "polished_from": source.number}
    steps = POLISH_STEPS_FACTOR * STEPS
    return scored(
        number, source.params, accuracy, polish_steps=steps, finetune_steps=steps, **attrs
    )


def test_it_polishes_the_fastest_plan_faster_than_the_base_within_the_slack() -> None:
    base = trial(1, INT8, 0.945)  # holds the floor
    near = trial(2, KEEP[0.75], 0.925)  # 2.5 points: within 3
    far = trial(3, KEEP[0.5], 0.91)  # 4 points: not
    chosen = POLISHER.next([trial(0, DENSE_PLAN, 0.95), base, near, far])
    assert chosen is not None and chosen.source == 2 and chosen.params == KEEP[0.75]
    assert chosen.steps == POLISH_STEPS_FACTOR * STEPS
    assert chosen.user_attrs() == {
        "warm_start": "polished", "polished_from": 2, "polish_steps": POLISH_STEPS_FACTOR * STEPS
    }  # fmt: skip
    assert SLACK == 3  # the figures above are chosen for it


def test_a_plan_slower_than_the_base_or_cut_short_or_polished_already_is_not_polished() -> None:
    base = trial(1, KEEP[0.75], 0.945)
    slower = trial(2, INT8, 0.93)  # near the floor but slower than the base
    assert POLISHER.next([base, slower]) is None
    hopeless = trial(3, KEEP[0.5], 0.93, finetune_steps=0)  # far over budget: not fine-tuned
    assert POLISHER.next([base, hopeless]) is None
    fast = trial(4, KEEP[0.5], 0.93)
    assert POLISHER.next([base, fast]).source == 4
    # polished once (running, or scored): not again
    running = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, params={}, distributions={},
        user_attrs={"polish_steps": 240},
    )  # fmt: skip
    running.params = fast.params
    assert POLISHER.next([base, fast, running]) is None


def test_a_polish_that_holds_becomes_the_base_and_one_that_misses_bounds_the_next() -> None:
    base = trial(1, INT8, 0.945)
    a = trial(2, KEEP[0.5], 0.925)  # the fastest
    b = trial(3, KEEP[0.75], 0.93)
    assert POLISHER.next([base, a, b]).source == 2
    # a held: it is the base now, and nothing is faster
    assert POLISHER.next([base, a, b, polished(4, a, 0.942)]) is None
    # a missed: b scored more than a in the short fine-tune (0.93 > 0.925), so it is tried
    assert POLISHER.next([base, a, b, polished(4, a, 0.935)]).source == 3
    # b missed first: a scored less than b did before its polish, so it is not tried
    assert POLISHER.next([base, a, b, polished(4, b, 0.935)]) is None


def test_the_refiner_never_descends_from_a_polished_plan() -> None:
    refiner = Refiner(KNOBS, cost, predict_ms, dense=DENSE, max_drop=MAX_DROP)
    a = trial(1, KEEP[0.5], 0.925)
    # only the polished trial holds the floor: the refiner has no base
    assert refiner.next([a, polished(2, a, 0.945)]) is None


def test_polish_out_of_range_is_refused() -> None:
    with pytest.raises(UserInputError, match="--polish must be 0 or more, got -1"):
        search(f"{F}:tiny_mlp", task=f"{F}:tiny_task", polish=-1, show_progress=False)


@pytest.mark.usefixtures("quick_timing")
def test_a_search_ends_with_a_polished_trial_fine_tuned_for_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timing is not what is tested: skip the plain alternatives and the verify step.
    monkeypatch.setattr(run, "measure_alternatives", lambda *args, **kwargs: [])
    monkeypatch.setattr(run, "verify_front", lambda *args, **kwargs: 0)
    monkeypatch.setattr(polish, "SLACK", 1000)  # any plan is near a 0.1-point floor
    monkeypatch.chdir(tmp_path)  # autocompress.search writes its report under ./reports/
    space = tmp_path / "three-plans.yaml"
    space.write_text("version: 1\ndefaults:\n  keep_ratio: [1.0, 0.75, 0.5]\n")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = search(
        f"{F}:tiny_mlp", task=f"{F}:tiny_task", space=str(space), storage=storage, study="s",
        trials=4, finetune_steps=2, polish=1, budget=Budget(latency_ms=1000, max_drop=0.001),
        sampler="random", show_progress=False,
    )  # fmt: skip
    # the descent goes on from plans within the polish's reach: 1000 x 0.1 points
    assert any("the fastest plan within 100 points" in note for note in result.notes)
    assert any(
        note.startswith("the last trial fine-tunes the fastest plans within 100 points")
        for note in result.notes
    )
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.trials
    assert len(trials) == 4
    first, last = trials[:3], trials[3]
    assert all(t.user_attrs["finetune_steps"] == 2 for t in first)
    assert last.user_attrs["warm_start"] == "polished"
    source = trials[last.user_attrs["polished_from"]]
    assert source.params == last.params and source.user_attrs["plan"] == last.user_attrs["plan"]
    # fine-tuned anew for 4x the steps (export replays `finetune_steps`), not told again
    assert last.user_attrs["finetune_steps"] == last.user_attrs["polish_steps"] == 8
    assert "duplicate_of" not in last.user_attrs
    # the plan the polisher chose from the trials before it (the rules are tested above)
    dense = record.read(study).baseline.accuracy
    chosen = Polisher(trials=1, steps=2, dense=dense, max_drop=0.001).next(first)
    assert chosen is not None and chosen.source == source.number
