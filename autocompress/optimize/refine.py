"""Refinement: once the queued plans are scored, go on from the fastest one that holds accuracy.

The allocated plans (`optimize.allocate`) are chosen from costs measured before any
fine-tune, and the fine-tune recovers some changes far better than others (a dropped
transformer layer far better than its distortion says). Once the trials have scored them,
the study knows better: the fastest plan whose fine-tuned accuracy stays within the floor is
the place to search from. Each refinement continues the allocator's greedy descent from
that plan (`allocation_path` with `start_params`) to the first point predicted a step
faster, `FIRST_STEP` of its time; a refinement that becomes the new fastest plan within the
floor is refined in turn with the same step, and each refinement of a plan that stays the
fastest (it fell below the floor, or was not faster) halves the next step from it, down to
`MIN_STEP`. Where the step's point was tried already (a single move saves more than the
step), the descent holds that move and takes the next best one: a move the fine-tune has
judged is not asked again. After `TRIES_PER_BASE` refinements of one plan that all failed to
replace it, the sampler has the trials again.

A sampler with a handful of trials over 60 per-layer decisions lands far from the front
(on minilm-sentiment every sampled plan of a 30-trial search scored 67.75-87.35%, dense
90.95%); a descent from a plan the fine-tune has already judged moves few decisions at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autocompress.config import Budget, drop_over
from autocompress.optimize.allocate import Allocation, Params, allocation_path
from autocompress.space.spec import Knob

# A polished trial's attribute (`optimize.polish`): the steps of its longer fine-tune.
POLISH_STEPS = "polish_steps"

# The first step of a refinement: this fraction of the base plan's predicted time.
FIRST_STEP = 0.10
# The smallest step: the predictor's own error is of this order.
MIN_STEP = 0.025
# Refinements of one plan that stays the base (each fell below the floor or was not faster)
# before the sampler has the trials: 10%, 5%, 2.5% and two next-best moves at 2.5%.
TRIES_PER_BASE = 5
# The accuracy floor below the dense model's where the budget gives none (`--max-drop`).
DEFAULT_DROP = 0.01

_COMPLETE = optuna.trial.TrialState.COMPLETE


@dataclass(frozen=True)
class Refinement:
    """The next plan to try: a step of the descent from a scored plan.

    Args:
        params: sampler parameters for every knob.
        base: the number of the trial it descends from.
        step: the fraction of the base's predicted time it was asked to save.
        predicted_ms: its predicted latency.
    """

    params: Params
    base: int
    step: float
    predicted_ms: float

    def user_attrs(self) -> dict[str, Any]:
        """What its trial records: where the plan came from (`show`, the report)."""
        return {"warm_start": "refined", "refined_from": self.base, "refine_step": self.step}


@dataclass(frozen=True)
class Refiner:
    """Chooses each refinement from a study's trials.

    Args:
        knobs: the space's knobs for the model.
        cost: `(param, value) -> measured cost` of that single change (`Sensitivity.cost`).
        predict_ms: a whole plan's predicted latency from its sampler parameters.
        dense: the dense model's accuracy.
        max_drop: the most accuracy a base plan may lose against it (the floor).
    """

    knobs: Sequence[Knob]
    cost: Callable[[str, Any], float]
    predict_ms: Callable[[Params], float]
    dense: float
    max_drop: float = DEFAULT_DROP

    def note(self, metric_name: str) -> str:
        """What the search note says it does."""
        points = round(100 * self.max_drop, 4)
        return (
            "once the queued plans are run, each trial refines the fastest plan within "
            f"{points:g} point{'' if points == 1 else 's'} of the dense {metric_name} (a step "
            f"of {100 * FIRST_STEP:g}% of its predicted time, halved when it does not hold, then "
            "the next best move)"
        )

    def next(self, trials: Sequence[optuna.trial.FrozenTrial]) -> Refinement | None:
        """The next refinement, or None when there is no base plan, the descent from it has
        no untried point, or it has had `TRIES_PER_BASE` refinements. Polished trials
        (`optimize.polish`) are never its base.

        Args:
            trials: the study's trials, any state.
        """
        # A polished plan's accuracy is its longer fine-tune's: a 60-step refinement from it
        # would be judged against what it was never given.
        trials = [t for t in trials if POLISH_STEPS not in t.user_attrs]
        base = base_trial(trials, dense=self.dense, max_drop=self.max_drop)
        if base is None or sum(_refines(t, base) for t in trials) >= TRIES_PER_BASE:
            return None
        step = next_step(trials, base)
        tried = {_key(t.params) for t in trials}
        held: set[str] = set()
        path = self._descent(base.params, held)
        # Ends: each pass halves the step (at most twice) or holds one more knob.
        while len(path) >= 2:
            goal = path[0].predicted_ms * (1 - step)
            point = next((a for a in path[1:] if a.predicted_ms <= goal), path[-1])
            if _key(point.params) not in tried:
                return Refinement(point.params, base.number, step, point.predicted_ms)
            if point is not path[1] and step / 2 >= MIN_STEP:
                step /= 2  # the same descent, a nearer point on it
            else:  # the first move is judged: hold it, take the next best
                held.update(p for p, v in path[1].params.items() if base.params[p] != v)
                path = self._descent(base.params, held)
        return None

    def _descent(self, start: Params, held: set[str]) -> list[Allocation]:
        """The allocator's descent from `start`, the `held` knobs left as they are."""
        return allocation_path(
            self.knobs, self.cost, self.predict_ms, start_params=start, held=frozenset(held)
        )


def floor_drop(budget: Budget) -> float:
    """The accuracy a search's plans may lose: the budget's `--max-drop`, else `DEFAULT_DROP`."""
    return DEFAULT_DROP if budget.max_drop is None else budget.max_drop


def base_trial(
    trials: Sequence[optuna.trial.FrozenTrial], *, dense: float, max_drop: float
) -> optuna.trial.FrozenTrial | None:
    """The fastest complete trial that loses at most `max_drop` against `dense` (judged as the
    study's budget is, `config.drop_over`; ties: the more accurate, then the first); None
    where no trial holds it."""
    held = [
        t
        for t in trials
        if t.state == _COMPLETE and t.values and drop_over(dense, t.values[0], max_drop) <= 0
    ]
    return min(held, key=lambda t: (t.values[1], -t.values[0], t.number), default=None)


def next_step(trials: Sequence[optuna.trial.FrozenTrial], base: optuna.trial.FrozenTrial) -> float:
    """The step of the next refinement from `base`: half the smallest step already tried from
    it (those did not replace it) but at least `MIN_STEP`, else the step that made it, else
    `FIRST_STEP`."""
    steps = [t.user_attrs["refine_step"] for t in trials if _refines(t, base)]
    if steps:
        return max(min(steps) / 2, MIN_STEP)
    return float(base.user_attrs.get("refine_step", FIRST_STEP))


def _refines(trial: optuna.trial.FrozenTrial, base: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get("refined_from") == base.number and "refine_step" in trial.user_attrs


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
