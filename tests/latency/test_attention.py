"""Attention cores: found in a real (tiny, random) BERT, kept heads as `apply` prunes them,
timed per head count, and learned by the predictor where they cost as much as the projections."""

from __future__ import annotations

import warnings

import pytest
import torch

from autocompress.compress.apply import apply
from autocompress.config import Plan
from autocompress.hardware.targets import CpuTarget
from autocompress.latency.geometry import build_layer, example_input
from autocompress.latency.kernel import FP32, INT8
from autocompress.latency.lut import lut_grid, measure_lut
from autocompress.latency.predictor import LatencyPredictor
from autocompress.latency.profile import Profile, random_plans
from autocompress.latency.shapes import ModelShapes
from autocompress.space.discover import discover
from autocompress.space.spec import load_space
from tests.conftest import make_tiny_resnet
from tests.transformer_factories import tiny_bert, tokens

SPACE = load_space("transformer")  # heads kept: 1.0, 0.75, 0.5 of 4


@pytest.fixture(scope="module")
def bert():
    model, inputs = tiny_bert(), tokens(1, 16)
    layers = discover(model, inputs)
    return model, inputs, ModelShapes.from_model(model, inputs, layers), SPACE.knobs(layers)


@pytest.fixture(scope="module")
def lut(bert) -> list[dict]:
    _, _, shapes, knobs = bert
    return measure_lut(lut_grid(shapes, knobs, SPACE.round_to), CpuTarget(rounds=3), 1)


def test_each_attention_module_is_found_with_its_heads_and_tokens(bert) -> None:
    _, _, shapes, _ = bert
    assert [(a.name, a.heads, a.head_size, a.tokens) for a in shapes.attention] == [
        (f"encoder.encoder.layer.{i}.attention.self", 4, 16, 16) for i in range(2)
    ]
    assert [a.group for a in shapes.attention] == [
        f"encoder.encoder.layer.{i}.attention.self.query" for i in range(2)
    ]
    again = ModelShapes.from_dict(shapes.to_dict())
    assert again.attention == shapes.attention
    resnet = make_tiny_resnet()
    inputs = (torch.randn(1, 1, 16, 16),)
    assert ModelShapes.from_model(resnet, inputs, discover(resnet, inputs)).attention == []


def test_heads_kept_are_the_heads_the_pruned_model_runs(bert) -> None:
    model, inputs, shapes, knobs = bert
    seen = set()
    for plan in random_plans(knobs, 12, seed=0, round_to=SPACE.round_to):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = apply(model, plan, inputs)
        modules = dict(built.named_modules())
        cores = [k for k in shapes.kernels(plan) if k.compute == FP32 and "Attention" in k.geometry]
        for attention, core in zip(shapes.attention, cores, strict=True):
            heads = modules[attention.name].num_attention_heads
            assert core.cin == heads and core.cout == 16
            assert core.out_elems == heads * 16 * 16  # (tokens x kept width) per sample
            seen.add(heads)
    assert seen == {2, 3, 4}


def test_the_profile_times_the_core_at_every_head_count_the_space_keeps(bert, lut) -> None:
    _, _, shapes, _ = bert
    cores = [e for e in lut if e["geometry"] == shapes.attention[0].geometry_json()]
    assert [(e["cin"], e["cout"], e["compute"]) for e in cores] == [
        (h, 16, FP32) for h in (2, 3, 4)
    ]
    geometry = {"type": "Attention", "tokens": 16, "head_size": 16}
    core, x = build_layer(geometry, 3, 16), example_input(geometry, 3, 2)
    out = core(x)
    reference = torch.softmax(x @ x.transpose(-1, -2) / 4.0, dim=-1) @ x  # head size 16
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out, reference, atol=1e-5)
    assert all(e["out_elems"] == e["cin"] * 16 * 16 and e["ms"] > 0 for e in cores)


def test_a_core_as_costly_as_the_projections_is_learned_only_with_its_table(bert, lut) -> None:
    # Compiled plans whose latency is half their int8 projections' work and half the heads
    # kept: the fit's coefficients are non-negative, so the projections alone cannot carry
    # the attention's share (the heads shrink q/k/v but not the FFN).
    _, _, shapes, knobs = bert
    drawn = random_plans(knobs, 200, seed=0, round_to=SPACE.round_to)
    plans = list({plan.key(): plan for plan in drawn}.values())
    assert len(plans) > 40

    def int8_macs(plan: Plan) -> int:
        return sum(k.cin * k.out_elems for k in shapes.kernels(plan) if k.compute == INT8)

    dense_macs = sum(k.cin * k.out_elems for k in shapes.kernels(Plan()) if "Linear" in k.geometry)

    def measured(plan: Plan) -> float:
        heads = [
            shapes.heads_kept(i, plan.config(a.group).keep_ratio, plan.round_to) / a.heads
            for i, a in enumerate(shapes.attention)
        ]
        return 0.1 + 0.45 * int8_macs(plan) / dense_macs + 0.45 * sum(heads) / len(heads)

    def worst(with_shapes: ModelShapes) -> float:
        profile = Profile(
            model="bert", fingerprint={}, batch_size=1, space_key="",
            shapes=with_shapes.to_dict(), lut=lut,
            calibration=[{"plan": p.to_dict(), "ratio": measured(p)} for p in plans[::2]],
            dense_ms=1.0, seconds=0.0,
        )  # fmt: skip
        predictor = LatencyPredictor(profile)
        assert {predictor.features(p)[0] for p in plans} == {"compiled"}
        return max(abs(predictor.predict_ratio(p) / measured(p) - 1) for p in plans[1::2])

    assert worst(shapes) < 0.02
    blind = ModelShapes.from_dict({**shapes.to_dict(), "attention": []})
    assert worst(blind) > 0.05


def test_a_space_that_keeps_every_head_times_one_head_count(bert) -> None:
    _, _, shapes, knobs = bert
    no_pruning = [k for k in knobs if k.setting != "keep_ratio"]
    grid = lut_grid(shapes, no_pruning, SPACE.round_to)
    assert grid[(shapes.attention[0].geometry_json(), FP32)] == ([4], [16])
