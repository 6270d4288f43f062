"""The contract every registered compression method keeps (`compress.METHODS`): a method
added to the registry gets these tests for free."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from autocompress.compress import METHODS, Method
from autocompress.compress._swap import QUANTIZABLE, leaves
from autocompress.compress.apply import apply, bake, deploy
from autocompress.compress.fits import refusal
from autocompress.compress.method import KernelEffect, Offers, register
from autocompress.compress.size import compressed_size_bytes, size_bytes
from autocompress.config import LayerConfig, Plan, Setting, settings
from autocompress.errors import PlanError, PlanWarning
from autocompress.space.spec import load_space, packaged_spaces

NAMES = METHODS.names()


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    ).eval()


NETS = {"conv": (_conv_net, (2, 4, 8, 8)), "mlp": (_mlp, (2, 64))}


def _configs(method: Method) -> list[LayerConfig]:
    """Every valid combination of the method's levels that turns it on."""
    axes = [(s.name, (s.default, *s.levels)) for s in method.settings]
    found = []
    for values in itertools.product(*(levels for _, levels in axes)):
        try:
            cfg = LayerConfig(**dict(zip([n for n, _ in axes], values, strict=True)))
        except PlanError:
            continue  # a combination the method's own rule refuses
        if method.active(cfg):
            found.append(cfg)
    return found


def _plan(model: nn.Module, method: Method, cfg: LayerConfig) -> Plan:
    """`cfg` on every Conv/Linear but the output layer, where the dense layer can take it."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    chosen = {}
    for name, module in layers[:-1]:
        if all(refusal(module, s.name, cfg[s.name]) is None for s in method.settings):
            chosen[name] = cfg
    return Plan(layers=chosen)


@pytest.mark.parametrize("name", NAMES)
def test_every_level_is_valid_alone_or_beside_the_methods_other_levels(name: str) -> None:
    method = METHODS.get(name)
    configs = _configs(method)
    assert configs, f"{name} declares no level that turns it on"
    for setting in method.settings:
        assert setting.check(setting.default) is None
        assert settings()[setting.name] is setting
        for level in setting.levels:
            assert any(c[setting.name] == level for c in configs), (setting.name, level)


@pytest.mark.parametrize("name", NAMES)
def test_knobs_round_trip_through_json(name: str) -> None:
    for cfg in _configs(METHODS.get(name)):
        plan = Plan(layers={"a": cfg})
        again = Plan.from_json(plan.to_json())
        assert again == plan and again.config("a") == cfg
        assert LayerConfig.from_dict(cfg.to_dict()) == cfg
        assert set(cfg.to_dict()) <= {s.name for s in METHODS.get(name).settings}


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_value_of_each_knob_is_refused(name: str) -> None:
    for setting in METHODS.get(name).settings:
        with pytest.raises(PlanError, match=setting.name):
            LayerConfig(**{setting.name: "not a level"})


@pytest.mark.parametrize("name", NAMES)
def test_the_off_value_is_identity(name: str) -> None:
    method = METHODS.get(name)
    off = LayerConfig(**{s.name: s.default for s in method.settings})
    assert off.is_identity and not method.active(off)
    assert method.kernel_effect(off) == KernelEffect()
    assert method.stored_bytes(torch.randn(8, 8), off, table=False) is None
    model, shape = _conv_net(), NETS["conv"][1]
    x = torch.randn(shape)
    out = apply(model, Plan(layers={"0": off}), x)
    torch.testing.assert_close(out(x), model(x))


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("name", NAMES)
def test_each_level_applies_bakes_and_deploys_with_the_right_output_shape(
    name: str, net: str
) -> None:
    method = METHODS.get(name)
    make, shape = NETS[net]
    x = torch.randn(shape)
    dense = make()
    for cfg in _configs(method):
        plan = _plan(dense, method, cfg)
        assert plan.layers, f"{cfg} fits no layer of the {net} net"
        with warnings.catch_warnings():
            warnings.simplefilter("error", PlanWarning)
            model = apply(dense, plan, x)
        assert model(x).shape == dense(x).shape
        baked = bake(model)
        assert baked(x).shape == dense(x).shape
        deployed = deploy(model, plan, x, [(x,)], compile=False)
        assert deployed(x).shape == dense(x).shape


@pytest.mark.parametrize("name", NAMES)
def test_size_counts_what_the_method_claims_for_each_weight(name: str) -> None:
    method = METHODS.get(name)
    dense, shape = _mlp(), NETS["mlp"][1]
    x = torch.randn(shape)
    for cfg in _configs(method):
        plan = _plan(dense, method, cfg)
        baked = bake(apply(dense, plan, x))
        expected = size_bytes(baked)
        for layer in plan.layers:
            for _, leaf in leaves(baked, layer, QUANTIZABLE):
                weight = leaf.weight.detach()
                claimed = method.stored_bytes(weight, cfg, table=False)
                fp32 = weight.numel() * 4
                if claimed is not None:
                    assert 0 < claimed <= fp32, (cfg, claimed, fp32)
                    expected += claimed - fp32
        assert compressed_size_bytes(baked, plan) == expected, cfg


@pytest.mark.parametrize("name", NAMES)
def test_uniform_levels_are_valid_configs_that_turn_the_method_on(name: str) -> None:
    method = METHODS.get(name)
    every = {s.name: sorted({s.default, *s.levels}, key=str) for s in settings().values()}
    offers = Offers(offered=every, shared=every)
    levels = [*method.uniform_levels(offers), *(v for _, v in method.sweep_levels(offers))]
    levels += [
        v for every_one in (False, True) for _, v in method.paired_levels(offers, every=every_one)
    ]
    if method.fast_level:
        levels.append(dict(method.fast_level))
    for level in levels:
        assert method.active(LayerConfig(**level)), level
    nothing = Offers(offered={}, shared={})
    assert method.uniform_levels(nothing) == [] and method.sweep_levels(nothing) == []


@pytest.mark.parametrize("space", packaged_spaces())
def test_the_packaged_spaces_offer_only_registered_knobs(space: str) -> None:
    loaded = load_space(space)
    knobs = {*loaded.defaults, *(k for rule in loaded.rules for k in rule.choices)}
    owners = {s.name for m in METHODS.names() for s in METHODS.get(m).settings}
    assert knobs <= owners


def test_a_knob_cannot_be_registered_twice() -> None:
    class Twice(Method):
        name = "twice"
        stage = 99
        settings = (Setting("keep_ratio", 1.0, lambda v: None),)

        def apply(self, model: nn.Module, plan: Plan, context: Any) -> None:
            return None

    with pytest.raises(ValueError, match="keep_ratio"):
        register(Twice)
    assert "twice" not in METHODS
