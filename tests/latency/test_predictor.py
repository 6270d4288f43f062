"""The latency predictor on a real (small) profile of TinyResNet, measured on this machine.

Timing is noisy, so the assertions are about structure and order, never absolute times.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autocompress.compress.apply import apply
from autocompress.config import LayerConfig, Plan
from autocompress.evaluate.metrics import top1
from autocompress.hardware.targets import CpuTarget
from autocompress.latency import predictor as predictor_module
from autocompress.latency import profile as profile_module
from autocompress.latency.kernel import BF16, FP32, INT8
from autocompress.latency.lut import lut_grid, measure_lut
from autocompress.latency.predictor import LatencyPredictor, _Table
from autocompress.latency.profile import (
    PROFILE_VERSION,
    OlderProfileError,
    Profile,
    profile_model,
)
from autocompress.latency.profiles import PredictorCheck, check_predictor, predictor_for
from autocompress.latency.shapes import ModelShapes
from autocompress.space.discover import discover
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob, Rule, SearchSpace
from autocompress.space.uniform import uniform_plans
from autocompress.task import Task
from tests.conftest import TINY_GROUPS, LstmRows, make_tiny_resnet

SPACE = SearchSpace(defaults={"keep_ratio": (1.0, 0.5)})


def _task() -> Task:
    x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, torch.randint(0, 10, (32,))), batch_size=8)
    return Task("synthetic", loader, loader, x[:1], top1, "top1")


@pytest.fixture(scope="module")
def setup():
    model, task = make_tiny_resnet(), _task()
    layers = discover(model, task.inputs())
    knobs = SPACE.knobs(layers)
    return model, task, layers, knobs, CpuTarget(rounds=5)


@pytest.fixture(scope="module")
def profile(setup) -> Profile:
    model, task, layers, knobs, target = setup
    return profile_model(
        model,
        task,
        target,
        model="tiny",
        shapes=ModelShapes.from_model(model, task.inputs(), layers),
        knobs=knobs,
        round_to=None,
        inputs=task.inputs(),
        calibration_plans=4,
        show_progress=False,
    )


@pytest.mark.usefixtures("quick_timing")  # which plans are timed is tested, not their ratios
def test_a_time_budget_keeps_the_minimum_of_random_plans_and_every_uniform_one(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, task, layers, knobs, target = setup
    # The same rule with a smaller minimum than the library's, so that the cut comes sooner.
    least = 3
    monkeypatch.setattr(profile_module, "MIN_CALIBRATION_PLANS", least)
    uniform = [dict(sorted(p.items())) for p in uniform_plans(knobs)]
    cut = profile_model(
        model, task, target, model="tiny",
        shapes=ModelShapes.from_model(model, task.inputs(), layers), knobs=knobs,
        round_to=None, inputs=task.inputs(), calibration_plans=least + 3,
        max_seconds=0.0, show_progress=False,
    )  # fmt: skip
    assert len(cut.calibration) == least + len(uniform)
    timed = [Plan.from_dict(c["plan"]) for c in cut.calibration[least:]]
    expected = [plan_from_trial(optuna.trial.FixedTrial(p), knobs) for p in uniform]
    assert timed == expected, "the uniform plans are timed last, all of them"


def _uniform(keep: float) -> Plan:
    return Plan(layers={m: LayerConfig(keep_ratio=keep) for ms in TINY_GROUPS.values() for m in ms})


def test_table_is_exact_on_a_bilinear_function() -> None:
    f = lambda cin, cout: 0.5 + 0.01 * cin + 0.02 * cout + 0.001 * cin * cout  # noqa: E731
    entries = [{"cin": a, "cout": b, "ms": f(a, b)} for a in (4, 8, 16) for b in (8, 32)]
    table = _Table(entries)
    for cin, cout in [(4, 8), (6, 20), (12, 31), (16, 32)]:
        assert table(cin, cout) == pytest.approx(f(cin, cout), rel=1e-9)


def test_grid_covers_every_geometry_at_its_extremes(setup) -> None:
    model, task, layers, knobs, _ = setup
    grid = lut_grid(ModelShapes.from_model(model, task.inputs(), layers), knobs, None)
    assert {compute for _, compute in grid} == {FP32}  # a space without bit-widths
    stem = next(a for (g, _), a in grid.items() if '"in_size": [16, 16]' in g and "[3, 3]" in g)
    assert stem[1] == [8, 16]  # the stem group at keep 0.5 and 1.0
    fc = next(axes for (g, _), axes in grid.items() if '"Linear"' in g)
    assert fc == ([16, 32], [10])  # inputs follow layer2's group; the output layer stays 10


def test_grid_times_each_format_the_bit_widths_allow(setup) -> None:
    model, task, layers, _, _ = setup
    space = SearchSpace(
        defaults={"keep_ratio": (1.0, 0.5), "weight_bits": (32, 8), "act_bits": (32, 8)},
        rules=(Rule(("Linear",), None, {"weight_bits": (32, 16), "act_bits": (32,)}),),
    )
    shapes = ModelShapes.from_model(model, task.inputs(), layers)
    grid = lut_grid(shapes, space.knobs(layers), None)
    convs = {c for (g, c) in grid if '"Conv2d"' in g}
    linears = {c for (g, c) in grid if '"Linear"' in g}
    assert convs == {FP32, INT8}
    assert linears == ({FP32, BF16} if shapes.bf16_compute else {FP32})


def test_profile_round_trips_and_refuses_other_versions(profile: Profile) -> None:
    assert Profile.from_json(profile.to_json()) == profile
    data = json.loads(profile.to_json())
    data["version"] = 0
    with pytest.raises(OlderProfileError, match=f"version-0 .* reads version {PROFILE_VERSION}"):
        Profile.from_json(json.dumps(data))
    with pytest.raises(ValueError, match=f"not a version-{PROFILE_VERSION} latency profile"):
        Profile.from_json(json.dumps([1, 2]))
    # 4 random plans, then the warm starts' uniform plan (every group at keep 0.5)
    assert len(profile.calibration) == 5
    assert profile.calibration[-1]["plan"] == _uniform(0.5).to_dict()
    # each timed against the dense model itself (no int8 layer: no twin)
    assert all(c["to_dense"] == 1.0 for c in profile.calibration)
    assert all(e["ms"] > 0 and e["out_elems"] > 0 for e in profile.lut)


def test_predictions_order_plans_by_how_much_they_prune(profile: Profile) -> None:
    predictor = LatencyPredictor(profile)
    dense, half, quarter = (predictor.predict_ratio(_uniform(k)) for k in (1.0, 0.5, 0.25))
    assert quarter < half < dense
    assert 0.7 < dense < 1.3  # the dense model is a calibration point at 1.0


def _macs(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted with hooks on the built model."""
    total = 0

    def count(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_out = module.in_features
        total += out.numel() * per_out

    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return total


def test_compute_bound_latency_is_learned_when_kernels_time_as_overhead(
    setup, profile: Profile
) -> None:
    # A runtime whose single-layer timings are all per-call overhead (OpenVINO at batch 1),
    # while the whole model's time follows its multiply-accumulates.
    model, task, *_ = setup
    dense_macs = _macs(model, task.inputs()[0])

    def measured(plan: Plan) -> float:
        return (
            0.3
            + 0.7 * _macs(apply(model, plan, task.inputs()).eval(), task.inputs()[0]) / dense_macs
        )

    def plan(keeps: tuple[float, ...]) -> Plan:
        groups = zip(keeps, TINY_GROUPS.values(), strict=True)
        return Plan(layers={m: LayerConfig(keep_ratio=k) for k, ms in groups for m in ms})

    plans = [plan(k) for k in itertools.product((1.0, 0.75, 0.5), repeat=len(TINY_GROUPS))]
    fitted, held_out = plans[::2], plans[1::2]
    flat = dataclasses.replace(
        profile,
        lut=[{**e, "ms": 0.05} for e in profile.lut],
        calibration=[{"plan": p.to_dict(), "ratio": measured(p)} for p in fitted],
    )
    predictor = LatencyPredictor(flat)
    errors = [abs(predictor.predict_ratio(p) / measured(p) - 1) for p in held_out]
    assert max(errors) < 0.05


def test_compiled_plans_are_fitted_in_their_twins_frame_and_carried_by_its_ratio(
    profile: Profile,
) -> None:
    """A compiled plan's ratio is its ratio to the dense model's twin times the twin's ratio to
    the dense model; the twin's ratio is the profile's unless the caller timed its own."""
    keeps = (0.75, 0.5, 0.25)
    plans = [  # every group at one keep ratio, in int8
        Plan(
            layers={
                m: LayerConfig(keep_ratio=k, weight_bits=8, act_bits=8) for m in _uniform(k).layers
            }
        )
        for k in keeps
    ]
    to_twin = {p.key(): 0.3 + 0.6 * k for p, k in zip(plans, keeps, strict=True)}
    # the same plans timed in two processes, whose twins ran at 0.5 and 0.6 of the dense model
    calibration = [
        {"plan": p.to_dict(), "ratio": to_twin[p.key()] * to_dense, "to_dense": to_dense}
        for p in plans
        for to_dense in (0.5, 0.6, 0.6)
    ]
    fitted = LatencyPredictor(
        dataclasses.replace(profile, calibration=profile.calibration + calibration)
    )
    # the median of its compiled plans'; its eager ones were timed against the dense model
    assert fitted.to_dense == {"compiled": 0.6, "eager": 1.0}
    for p in plans:
        assert fitted.predict_ratio(p, to_dense=0.4) == pytest.approx(0.4 * to_twin[p.key()])
        assert fitted.predict_ratio(p) == pytest.approx(0.6 * to_twin[p.key()])
    eager = _uniform(0.5)
    assert fitted.predict_ratio(eager, to_dense=1.0) == fitted.predict_ratio(eager)


def test_plans_timed_against_a_twin_keep_the_dense_model_at_ratio_1(profile: Profile) -> None:
    """Eager plans timed against a twin (profile version 15 timed a runtime's float plans
    against its int8 dense model): fitted in that frame, the dense model (its own reference,
    ratio 1 by definition) still predicts at 1."""
    twin = 0.45
    in_twins_frame = [{**c, "to_dense": twin} for c in profile.calibration]
    predictor = LatencyPredictor(dataclasses.replace(profile, calibration=in_twins_frame))
    assert predictor.to_dense == {"eager": twin}
    assert predictor.predict_ratio(Plan()) == pytest.approx(
        LatencyPredictor(profile).predict_ratio(Plan()), rel=1e-6
    )


def test_unprofiled_geometry_falls_back_to_the_regression(profile: Profile) -> None:
    predictor = LatencyPredictor(profile)
    kernels = predictor.shapes.kernels(Plan(layers={"layer2.conv1": LayerConfig(rank_ratio=0.5)}))
    halves = [k for k in kernels if (k.geometry, k.compute) not in predictor._tables]
    assert len(halves) == 2  # the space has no ranks, so the 3x1 / 1x3 halves were never timed
    times = [predictor.kernel_ms(k) for k in halves]
    assert all(math.isfinite(t) and t > 0 for t in times)


def test_a_compiled_plan_needs_a_profile_that_measured_some(profile: Profile) -> None:
    predictor = LatencyPredictor(profile)
    # Only an int8 layer makes a plan compile; int4 and bf16 layers run eagerly.
    eager = {"stem.0": LayerConfig(weight_bits=4), "fc": LayerConfig(weight_bits=16)}
    assert predictor.features(Plan(layers=eager))[0] == "eager"
    with pytest.raises(ValueError, match="measured no compiled plans"):
        predictor.predict_ratio(Plan(layers={"stem.0": LayerConfig(weight_bits=8, act_bits=8)}))


def test_check_line_has_the_documented_form() -> None:
    check = PredictorCheck(predicted=[1.0, 0.5, 0.32], measured=[1.05, 0.5, 0.4], predict_ms=0.4)
    assert check.line() == "within10=0.67 mape=0.083 spearman=1.00 n=3"
    assert np.allclose(check.errors, [-0.0476, 0.0, -0.2], atol=1e-4)


@pytest.mark.usefixtures("quick_timing")  # that fresh plans are measured, not how precisely
def test_check_measures_fresh_plans(setup, profile: Profile) -> None:
    model, task, _, knobs, target = setup
    result = check_predictor(
        LatencyPredictor(profile),
        model,
        task,
        target,
        knobs=knobs,
        round_to=None,
        inputs=task.inputs(),
        plans=3,
        show_progress=False,
    )
    assert len(result.measured) == 3 and all(m > 0 for m in result.measured)
    assert result.predict_ms > 0


@pytest.mark.usefixtures("quick_timing")  # which plans are measured, not their ratios
def test_check_skips_plans_the_profile_timed_and_repeats(setup, profile: Profile) -> None:
    model, task, _, knobs, target = setup
    # One knob of two choices: two plans in all, and the profile timed the dense one.
    dense_only = [{"plan": Plan().to_dict(), "ratio": 1.0}]
    predictor = LatencyPredictor(dataclasses.replace(profile, calibration=dense_only))
    result = check_predictor(
        predictor, model, task, target, knobs=knobs[:1], round_to=None, inputs=task.inputs(),
        plans=5, show_progress=False,
    )  # fmt: skip
    pruned = Plan(layers={m: LayerConfig(keep_ratio=0.5) for m in knobs[0].layers})
    assert result.predicted == [predictor.predict_ratio(pruned)]
    assert len(result.measured) == 1


@pytest.mark.usefixtures("quick_timing")  # when a profile is made again, not its figures
def test_cache_is_reused_and_a_corrupt_file_is_profiled_again(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, task, layers, knobs, target = setup
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    # NNCF's set_log_level (an OpenVINO test, which now runs first) leaves the capture at ERROR.
    caplog.set_level(logging.WARNING)
    kwargs = dict(
        model="tiny",
        layers=layers,
        knobs=knobs[:1],  # one group varies: few kernel sizes to time
        round_to=None,
        inputs=task.inputs(),
        calibration_plans=1,
        show_progress=False,
    )
    first, path = predictor_for(model, task, target, **kwargs)
    assert path.is_file() and path.is_relative_to(tmp_path / "profiles" / "tiny")
    stamp = path.stat().st_mtime_ns
    again, same = predictor_for(model, task, target, **kwargs)
    assert same == path and path.stat().st_mtime_ns == stamp
    assert again.profile == first.profile
    path.write_text("{not json")
    fresh, _ = predictor_for(model, task, target, **kwargs)
    assert "unreadable" in caplog.text
    assert Profile.from_json(path.read_text()) == fresh.profile
    # A profile whose shapes leave layers out (as class-name matching left out subclassed
    # convolutions) is not used: it is profiled again.
    stale = json.loads(path.read_text())
    stale["shapes"]["layers"] = stale["shapes"]["layers"][-1:]
    path.write_text(json.dumps(stale))
    redone, _ = predictor_for(model, task, target, **kwargs)
    assert f"leaves out {len(layers) - 1} layer(s) of the model" in caplog.text
    assert [x["name"] for x in redone.profile.shapes["layers"]] == [x.name for x in layers]
    # A calibration plan with a key this version does not know: named, profiled again.
    odd = json.loads(path.read_text())
    first_layer = next(iter(odd["calibration"][0]["plan"]["layers"].values()))
    first_layer["teleport"] = 1
    path.write_text(json.dumps(odd))
    rebuilt, _ = predictor_for(model, task, target, **kwargs)
    assert f"latency profile {path} does not fit (" in caplog.text and "teleport" in caplog.text
    assert "teleport" not in path.read_text() and rebuilt.profile.calibration


def test_plans_keeping_an_lstm_whole_get_a_fit_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One fused nn.LSTM call and its unrolled Linears scale differently with the kept hidden
    # size; here whole plans follow one law and unrolled (low-rank or 4-bit) plans another.
    model, inputs = LstmRows().eval(), (torch.randn(1, 5, 6),)
    layers = discover(model, inputs)
    shapes = ModelShapes.from_model(model, inputs, layers)
    knobs = [
        Knob("keep", "keep_ratio", tuple(i / 24 for i in range(4, 25)), ("lstm",)),
        Knob("rank", "rank_ratio", (0.5, 1.0), ("lstm",)),
        Knob("bits", "weight_bits", (4, 32), ("lstm",)),
    ]
    lut = measure_lut(lut_grid(shapes, knobs, None), CpuTarget(rounds=3), 1)
    whole = [Plan(layers={"lstm": LayerConfig(keep_ratio=i / 24)}) for i in range(4, 24)]
    unrolled = [
        Plan(layers={"lstm": LayerConfig(keep_ratio=i / 24, rank_ratio=r, weight_bits=b)})
        for i in range(4, 25, 2)
        for r, b in ((0.5, 32), (1.0, 4), (0.5, 4))
    ]

    def measured(plan: Plan) -> float:
        kept = shapes.kept("lstm", plan.config("lstm").keep_ratio, None) / 24
        return 0.25 + 0.75 * kept if shapes.keeps_recurrence(plan) else 1.8 + 0.4 * kept

    plans = whole + unrolled
    profile = Profile(
        model="rows", fingerprint={}, batch_size=1, space_key="", shapes=shapes.to_dict(),
        lut=lut, calibration=[{"plan": p.to_dict(), "ratio": measured(p)} for p in plans[::2]],
        dense_ms=1.0, seconds=0.0,
    )  # fmt: skip

    def worst(predictor: LatencyPredictor) -> float:
        return max(abs(predictor.predict_ratio(p) / measured(p) - 1) for p in plans[1::2])

    split = LatencyPredictor(profile)
    assert {split.features(p)[0] for p in plans} == {"eager"}
    assert worst(split) < 0.02
    monkeypatch.setattr(predictor_module, "MIN_FORM_PLANS", len(plans))  # one fit for both
    assert worst(LatencyPredictor(profile)) > 0.05
