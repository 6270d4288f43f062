"""Uniform plans: one setting on every layer, every other knob left at no compression."""

from __future__ import annotations

import optuna
import pytest
import torch

from autocompress.config import LayerConfig
from autocompress.space.discover import discover
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob, parse_space
from autocompress.space.uniform import uniform_levels, uniform_plans
from tests.conftest import TinyResNet

JOINT = {
    "version": 1,
    "defaults": {
        "keep_ratio": [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25],
        "rank_ratio": [1.0, 0.5, 0.25],
        "sparsity": [0.0, 0.5, 0.9],
        "sparsity_pattern": ["unstructured", "2:4"],
        "weight_bits": [32, 16, 8],
        "act_bits": [32, 8],
    },
    "rules": [{"match": {"type": "Linear"}, "rank_ratio": [1.0], "weight_bits": [32]}],
}


# Every keep ratio of JOINT in [0.3, 1): each is a warm start with int8.
KEEPS_WITH_INT8 = (0.875, 0.75, 0.625, 0.5, 0.375)


def _knobs(model: TinyResNet, x: torch.Tensor, spec: dict) -> list[Knob]:
    return parse_space(spec).knobs(discover(model, (x,)))


def _configs(knobs: list[Knob], params: dict) -> set[LayerConfig]:
    plan = plan_from_trial(optuna.trial.FixedTrial(params), knobs)
    return set(plan.layers.values())


def test_joint_space_warm_starts_each_method_alone_then_each_keep_ratio_with_int8(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    knobs = _knobs(tiny_resnet, tiny_input, JOINT)
    plans = [_configs(knobs, params) for params in uniform_plans(knobs)]
    assert plans == [
        {LayerConfig(keep_ratio=0.875)},
        {LayerConfig(keep_ratio=0.625)},
        {LayerConfig(keep_ratio=0.375)},
        {LayerConfig(weight_bits=8, act_bits=8)},  # the Linear offers no 8: it stays float
        {LayerConfig(sparsity=0.5)},
        {LayerConfig(rank_ratio=0.5)},  # the Linear offers no rank: it stays whole
        *({LayerConfig(keep_ratio=r, weight_bits=8, act_bits=8)} for r in KEEPS_WITH_INT8),
    ]


def test_a_prune_only_space_gets_only_pruning_levels(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    knobs = _knobs(
        tiny_resnet, tiny_input, {"version": 1, "defaults": {"keep_ratio": [1.0, 0.75, 0.5]}}
    )
    assert [_configs(knobs, p) for p in uniform_plans(knobs)] == [{LayerConfig(keep_ratio=0.75)}]
    assert uniform_levels(knobs, "quant") == uniform_levels(knobs, "lowrank") == []
    with pytest.raises(ValueError, match="unknown method 'distill'"):
        uniform_levels(knobs, "distill")


def test_a_knob_without_its_identity_takes_its_mildest_choice(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    """Like the transformer space's embedding tables (int8 or int4, never float): every
    uniform plan still sets that knob, so a `FixedTrial` of it builds (the profile does)."""
    spec = {
        "version": 1,
        "defaults": {"keep_ratio": [1.0, 0.5]},
        "rules": [{"match": {"type": "Linear"}, "weight_bits": [4, 8]}],
    }
    knobs = _knobs(tiny_resnet, tiny_input, spec)
    plans = uniform_plans(knobs)
    assert [_configs(knobs, p) for p in plans] == [
        {LayerConfig(weight_bits=8)},  # the mildest plan compresses the Linear
        {LayerConfig(keep_ratio=0.5), LayerConfig(weight_bits=8)},
    ]
    for params in plans:
        assert set(params) == {k.param for k in knobs}
        configs = plan_from_trial(optuna.trial.FixedTrial(params), knobs).layers
        assert configs["fc"].weight_bits == 8
