"""Decoding trials into plans: the same decoder for FixedTrial replay and a live optuna study."""

from __future__ import annotations

import optuna
import pytest
import torch

from autocompress.config import LayerConfig, Plan
from autocompress.space.discover import LayerInfo, discover
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob, parse_space
from tests.conftest import TINY_GROUPS, TinyResNet


@pytest.fixture
def knobs(tiny_resnet: TinyResNet, tiny_input: torch.Tensor) -> list[Knob]:
    layers: list[LayerInfo] = discover(tiny_resnet, (tiny_input,))
    space = parse_space({"version": 1, "defaults": {"keep_ratio": [1.0, 0.75, 0.5, 0.25]}})
    return space.knobs(layers)


def test_fixed_trial_gives_the_expected_plan(knobs: list[Knob]) -> None:
    trial = optuna.trial.FixedTrial(
        {
            "keep_ratio:stem.0": 0.5,
            "keep_ratio:layer1.conv1": 1.0,
            "keep_ratio:layer2.conv1": 0.25,
            "keep_ratio:layer2.conv2": 0.75,
        }
    )
    plan = plan_from_trial(trial, knobs, round_to=8)
    assert plan == Plan(
        layers={
            "stem.0": LayerConfig(keep_ratio=0.5),
            "layer1.conv2": LayerConfig(keep_ratio=0.5),
            "layer2.conv1": LayerConfig(keep_ratio=0.25),
            "layer2.conv2": LayerConfig(keep_ratio=0.75),
            "layer2.downsample.0": LayerConfig(keep_ratio=0.75),
        },
        round_to=8,
    )
    # the identity choice names no layer
    assert "layer1.conv1" not in plan.layers


def test_all_members_of_a_group_get_the_same_ratio(knobs: list[Knob]) -> None:
    trial = optuna.trial.FixedTrial({k.param: 0.25 for k in knobs})
    plan = plan_from_trial(trial, knobs)
    for members in TINY_GROUPS.values():
        assert {plan.config(m).keep_ratio for m in members} == {0.25}
    assert plan.config("fc") == LayerConfig()
    assert plan.round_to is None


def test_fixed_trial_missing_a_param_is_an_error(knobs: list[Knob]) -> None:
    with pytest.raises(ValueError, match=r"keep_ratio:stem\.0"):
        plan_from_trial(optuna.trial.FixedTrial({}), knobs)


def test_no_knobs_gives_the_identity_plan() -> None:
    assert plan_from_trial(optuna.trial.FixedTrial({}), []).is_identity


def test_live_study_trial_and_its_frozen_replay_agree(knobs: list[Knob]) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    plans = []
    for _ in range(5):
        trial = study.ask()
        plan = plan_from_trial(trial, knobs)
        study.tell(trial, 0.0)
        plans.append(plan)
        assert set(trial.params) == {k.param for k in knobs}
        for knob in knobs:
            chosen = trial.params[knob.param]
            assert chosen in knob.choices
            assert {plan.config(layer).keep_ratio for layer in knob.layers} == {chosen}
    for frozen, plan in zip(study.trials, plans, strict=True):
        assert plan_from_trial(frozen, knobs) == plan
        assert plan_from_trial(optuna.trial.FixedTrial(frozen.params), knobs) == plan
    # five random draws over 4^4 plans are not all the same
    assert len({p.to_json() for p in plans}) > 1


def test_impossible_combinations_decode_to_the_nearest_valid_plan() -> None:
    knobs = [
        Knob("weight_bits:a", "weight_bits", (32, 4, 8), ("a",)),
        Knob("act_bits:a", "act_bits", (32, 8), ("a",)),
        Knob("sparsity:a", "sparsity", (0.0, 0.75), ("a",)),
        Knob("sparsity_pattern:a", "sparsity_pattern", ("unstructured", "2:4"), ("a",)),
    ]
    trial = optuna.trial.FixedTrial(
        {"weight_bits:a": 4, "act_bits:a": 8, "sparsity:a": 0.75, "sparsity_pattern:a": "2:4"}
    )
    config = plan_from_trial(trial, knobs).config("a")
    assert (config.weight_bits, config.act_bits) == (4, 32)
    assert (config.sparsity, config.sparsity_pattern) == (0.5, "2:4")
