"""The last trials of a search: the fastest plans near the floor, fine-tuned for longer.

A trial's fine-tune (60 distillation steps by default) is long enough to rank plans, not to
finish them: a plan that drops several blocks loses more in 60 steps than it keeps once
trained for longer. Measured on effnet-fmnist (ONNX Runtime int8, dense 91.75%, floor
90.75%): a plan 1.51x faster than the plain ONNX Runtime int8 model scored 89.00% after 60
steps and 91.65% after 240; one 1.43x faster 90.25% and 91.80%. The search's own trials can
never see such plans within the floor, and a higher learning rate does not replace the steps.

So the last `trials` trials of a search call re-run plans already scored, each with
`STEPS_FACTOR` times the study's steps, as new trials that record their own steps (export
replays them). Each takes the fastest plan that (1) is faster than the fastest trial within the
floor (a polished one included), (2) lost at most `SLACK` times the floor's drop in its own
short fine-tune, (3) was not polished before and (4) scored more in its short fine-tune than
every plan whose polish still missed the floor did in its own: a plan that lost more than
one which fell short is less likely to hold it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from autocompress.config import POLISH_STEPS_FACTOR as STEPS_FACTOR
from autocompress.config import drop_over
from autocompress.optimize.refine import DEFAULT_DROP, POLISH_STEPS, base_trial

# A plan is polished when it lost at most this many times the floor's drop in its trial.
SLACK = 3

_COMPLETE = optuna.trial.TrialState.COMPLETE


@dataclass(frozen=True)
class Polish:
    """A plan to fine-tune again for longer.

    Args:
        params: its sampler parameters (those of the trial it repeats).
        source: the number of that trial.
        steps: the fine-tune's steps.
    """

    params: dict[str, Any]
    source: int
    steps: int

    def user_attrs(self) -> dict[str, Any]:
        """What its trial records: where it came from and its steps (`show`, the loop)."""
        return {"warm_start": "polished", "polished_from": self.source, POLISH_STEPS: self.steps}


@dataclass(frozen=True)
class Polisher:
    """Chooses the plan each of a search's last trials polishes.

    Args:
        trials: how many of a call's last trials polish a plan (where one qualifies).
        steps: the study's fine-tune steps (a polished trial runs `STEPS_FACTOR` times more).
        dense: the dense model's accuracy.
        max_drop: the floor: the most accuracy a candidate may lose against it.
    """

    trials: int
    steps: int
    dense: float
    max_drop: float = DEFAULT_DROP

    @property
    def reach(self) -> float:
        """The most a plan may have lost in its own trial to be polished: `SLACK` floors."""
        return SLACK * self.max_drop

    def note(self, metric_name: str) -> str:
        """What the search note says it does."""
        last = (
            "the last trial fine-tunes"
            if self.trials == 1
            else f"the last {self.trials} trials fine-tune"
        )
        return (
            f"{last} the fastest plans within {round(100 * self.reach, 4):g} points "
            f"of the dense {metric_name} for {STEPS_FACTOR * self.steps} steps instead of "
            f"{self.steps}, to find those that hold {round(100 * self.max_drop, 4):g} (`from: "
            "polished`)"
        )

    def next(self, trials: Sequence[optuna.trial.FrozenTrial]) -> Polish | None:
        """The next plan to polish, or None where none qualifies (see the module's rules).

        Args:
            trials: the study's trials, any state.
        """
        polished = [t for t in trials if is_polished(t)]
        done = {_key(t.params) for t in polished}
        short = {t.number: t.values[0] for t in trials if t.state == _COMPLETE}
        missed = [  # the short fine-tune's scores of plans whose polish missed the floor
            short[t.user_attrs["polished_from"]]
            for t in polished
            if t.state == _COMPLETE
            and drop_over(self.dense, t.values[0], self.max_drop) > 0
            and t.user_attrs.get("polished_from") in short
        ]
        base = base_trial(trials, dense=self.dense, max_drop=self.max_drop)
        candidates = [
            t
            for t in trials
            if t.state == _COMPLETE
            and not is_polished(t)
            and t.user_attrs.get("finetune_steps") == self.steps
            and drop_over(self.dense, t.values[0], self.reach) <= 0
            and (base is None or t.values[1] < base.values[1])
            and all(t.values[0] > m for m in missed)
            and _key(t.params) not in done
        ]
        chosen = min(candidates, key=lambda t: (t.values[1], -t.values[0], t.number), default=None)
        if chosen is None:
            return None
        return Polish(chosen.params, chosen.number, STEPS_FACTOR * self.steps)


def is_polished(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial was a polish (`Polish`), in any state."""
    return POLISH_STEPS in trial.user_attrs


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
