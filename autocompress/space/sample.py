"""Decode a sampler's trial into a Plan; the same decoder serves search, replay and export."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from autocompress.config import LayerConfig, Plan, repair
from autocompress.space.spec import Knob


def plan_from_trial(
    trial: optuna.trial.BaseTrial, knobs: Sequence[Knob], *, round_to: int | None = None
) -> Plan:
    """Ask `trial` for every knob and build the plan it stands for.

    Works with a live `optuna.Trial`, a `FrozenTrial` or a `FixedTrial(params)`. Choices
    that cannot go together become the nearest valid plan: int8 activations without int8
    weights stay float, and 2:4 sparsity zeroes exactly half the weights.

    Args:
        trial: the trial to read choices from.
        knobs: the resolved decisions (`SearchSpace.knobs(layers)`).
        round_to: channel multiple for pruning.

    Returns:
        The plan, naming only layers that change.
    """
    settings: dict[str, dict[str, object]] = {}
    for knob in knobs:
        value = trial.suggest_categorical(knob.param, list(knob.choices))
        for layer in knob.layers:
            settings.setdefault(layer, {})[knob.setting] = value
    return Plan(
        layers={name: LayerConfig(**valid_settings(s)) for name, s in settings.items()},
        round_to=round_to,
    )


def valid_settings(settings: dict[str, object]) -> dict[str, object]:
    """Map impossible combinations to the nearest valid ones (in place; returned too), as the
    method that owns the knobs says (`Method.repair`): int8 activations without int8 weights
    stay float; 2:4 sparsity zeroes exactly half.
    """
    return repair(settings)
