"""Refinement: the descent goes on from the fastest scored plan that holds accuracy.

The allocator's hand-made space (tests/optimize/test_allocate.py): three layers' keep ratios
and bits, an additive latency model with a boundary cost between float and int8 layers.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from autocompress.optimize.allocate import allocation_path
from autocompress.optimize.refine import (
    FIRST_STEP,
    MIN_STEP,
    TRIES_PER_BASE,
    Refiner,
    base_trial,
)
from autocompress.space.uniform import uniform_params
from tests.optimize.test_allocate import KEEPS, KNOBS, cost, predict_ms

DENSE, MAX_DROP = 0.95, 0.05  # the floor: 0.9
INT8 = uniform_params(KNOBS, {"weight_bits": 8, "act_bits": 8})  # 2.1 ms


def scored(
    number: int, params: dict[str, Any], accuracy: float, **attrs: Any
) -> optuna.trial.FrozenTrial:
    """A complete trial of `params` as the search tells it (accuracy, predicted ms, size)."""
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        values=[accuracy, predict_ms(params), 1000],
        params=params,
        distributions={
            k.param: optuna.distributions.CategoricalDistribution(k.choices) for k in KNOBS
        },
        user_attrs=attrs,
    )
    trial.number = number
    return trial


REFINER = Refiner(KNOBS, cost, predict_ms, dense=DENSE, max_drop=MAX_DROP)


def test_the_base_is_the_fastest_plan_that_holds_the_floor() -> None:
    dense = uniform_params(KNOBS, {})
    harsh = uniform_params(KNOBS, {"weight_bits": 8, "act_bits": 8, "keep_ratio": 0.5})
    trials = [scored(0, dense, 0.95), scored(1, INT8, 0.94), scored(2, harsh, 0.80)]
    assert (
        base_trial(trials, dense=DENSE, max_drop=MAX_DROP).number == 1
    )  # #2 is faster but below the floor
    assert base_trial(trials[2:], dense=DENSE, max_drop=MAX_DROP) is None
    assert REFINER.next(trials[2:]) is None  # nothing holds accuracy: the sampler's turn
    # Exactly on the floor holds, though 0.9175 - 0.01 > 0.9075 in floats.
    assert base_trial([scored(3, harsh, 0.9075)], dense=0.9175, max_drop=0.01).number == 3


def test_a_refinement_is_the_first_point_of_the_descent_a_step_faster() -> None:
    trials = [scored(0, uniform_params(KNOBS, {}), 0.95), scored(1, INT8, 0.94)]
    refinement = REFINER.next(trials)
    assert refinement is not None and refinement.base == 1 and refinement.step == FIRST_STEP
    path = allocation_path(KNOBS, cost, predict_ms, start_params=INT8)
    goal = predict_ms(INT8) * (1 - FIRST_STEP)
    assert refinement.params == next(a.params for a in path if a.predicted_ms <= goal)
    assert refinement.predicted_ms == pytest.approx(predict_ms(refinement.params))
    # The cheapest layer is pruned first (keep 0.75 saves 6% of 2.1 ms, 0.5 saves 12%),
    # and the bits of the base stay int8.
    assert refinement.params == {**INT8, "keep_a": 0.5}
    assert refinement.user_attrs() == {
        "warm_start": "refined", "refined_from": 1, "refine_step": FIRST_STEP,
    }  # fmt: skip


def test_a_refinement_that_holds_is_refined_with_its_step_one_that_fails_halves_it() -> None:
    first = REFINER.next([scored(1, INT8, 0.94)])
    held = scored(2, first.params, 0.93, **first.user_attrs())
    second = REFINER.next([scored(1, INT8, 0.94), held])
    assert second.base == 2 and second.step == FIRST_STEP
    assert second.predicted_ms <= held.values[1] * (1 - FIRST_STEP) + 1e-9
    # It falls below the floor: #2 stays the base, and the next step from it is half.
    failed = scored(3, second.params, 0.85, **second.user_attrs())
    third = REFINER.next([scored(1, INT8, 0.94), held, failed])
    assert third.base == 2 and third.step == FIRST_STEP / 2
    assert third.params != second.params
    # Steps halve down to MIN_STEP, never below; each point is asked once.
    trials = [scored(1, INT8, 0.94), held, failed]
    while (nxt := REFINER.next(trials)) is not None:
        assert nxt.base == 2 and nxt.step >= MIN_STEP
        trials.append(scored(len(trials) + 1, nxt.params, 0.5, **nxt.user_attrs()))
    assert len(trials) <= 2 + TRIES_PER_BASE
    assert len({str(sorted(t.params.items())) for t in trials}) == len(trials)


def test_a_tried_first_move_is_held_and_the_next_best_is_taken() -> None:
    trials = [scored(1, INT8, 0.94)]
    steps = []
    for _ in range(3):  # each falls below the floor
        nxt = REFINER.next(trials)
        steps.append(nxt.step)
        trials.append(scored(len(trials) + 1, nxt.params, 0.5, **nxt.user_attrs()))
    # 10%: keep_a 0.5; 5%: keep_a 0.75 (a single move); 2.5% would be keep_a 0.75 again,
    # so keep_a is held and the next cheapest layer is pruned instead.
    assert steps == [FIRST_STEP, FIRST_STEP / 2, MIN_STEP]
    assert [t.params for t in trials[1:]] == [
        {**INT8, "keep_a": 0.5}, {**INT8, "keep_a": 0.75}, {**INT8, "keep_b": 0.75},
    ]  # fmt: skip
    # Every layer's pruning judged: what is left (back to float) saves no time.
    while (nxt := REFINER.next(trials)) is not None:
        assert nxt.base == 1 and nxt.step == MIN_STEP
        trials.append(scored(len(trials) + 1, nxt.params, 0.5, **nxt.user_attrs()))
    assert [t.params for t in trials[4:]] == [{**INT8, "keep_c": 0.75}]


def test_after_tries_per_base_failed_refinements_the_sampler_has_the_trials() -> None:
    attrs = {"warm_start": "refined", "refined_from": 1, "refine_step": MIN_STEP}
    others = [uniform_params(KNOBS, {"keep_ratio": k}) for k in (0.75, 0.5)]
    others += [{**INT8, "keep_a": 0.5, "keep_b": k} for k in KEEPS]
    failed = [scored(n + 2, p, 0.5, **attrs) for n, p in enumerate(others)]
    assert len(failed) == TRIES_PER_BASE
    assert REFINER.next([scored(1, INT8, 0.94), *failed[:-1]]) is not None
    assert REFINER.next([scored(1, INT8, 0.94), *failed]) is None


def test_the_fastest_plan_of_the_space_has_no_refinement() -> None:
    fastest = allocation_path(KNOBS, cost, predict_ms, start_params=INT8)[-1].params
    assert REFINER.next([scored(0, fastest, 0.95)]) is None


def test_the_trial_loop_queues_a_refinement_only_once_nothing_is_queued() -> None:
    from autocompress.optimize.trial_loop import _queue_next

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for trial in (scored(0, uniform_params(KNOBS, {}), 0.95), scored(1, INT8, 0.94)):
        study.add_trial(trial)
    study.enqueue_trial(uniform_params(KNOBS, {"keep_ratio": 0.75}))
    _queue_next(study, REFINER)  # a plan is queued: it goes first
    assert len(study.trials) == 3
    study.tell(study.ask(), [0.5, 2.25, 1000])
    _queue_next(study, REFINER)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1
    asked = study.ask()  # the sampler's next trial is the refinement, with its record
    refinement = REFINER.next(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert asked.user_attrs == refinement.user_attrs()
    assert {k.param: asked.suggest_categorical(k.param, k.choices) for k in KNOBS} == (
        refinement.params
    )
