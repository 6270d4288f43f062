"""`ModelShapes.kernels(plan)` lists exactly the layers `apply` builds, without building them."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply, bake
from autocompress.config import LayerConfig, Plan
from autocompress.errors import AutocompressError
from autocompress.latency.geometry import build_layer, example_input
from autocompress.latency.kernel import BF16, FP32, INT8
from autocompress.latency.lut import lut_grid
from autocompress.latency.profile import random_plans
from autocompress.latency.shapes import ModelShapes
from autocompress.space.discover import discover
from autocompress.space.spec import load_space
from tests.conftest import SAME_PAD_LAYERS, LstmRows, make_same_pad_net, make_tiny_resnet


def _real_channels(model: nn.Module) -> list[tuple[int, int]]:
    found = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found.append((m.in_features, m.out_features))
        elif isinstance(m, nn.Conv1d | nn.Conv2d):
            found.append((m.in_channels, m.out_channels))
    return found


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, tuple[torch.Tensor, ...], ModelShapes]:
    model = make_tiny_resnet()
    inputs = (torch.randn(1, 1, 16, 16),)
    return model, inputs, ModelShapes.from_model(model, inputs, discover(model, inputs))


def test_inputs_follow_the_group_that_feeds_them(tiny) -> None:
    _, _, shapes = tiny
    by_name = {layer.name: layer for layer in shapes.layers}
    assert by_name["stem.0"].in_group is None
    assert by_name["layer1.conv1"].in_group == "stem.0"
    assert by_name["layer1.conv2"].in_group == "layer1.conv1"
    assert by_name["layer2.downsample.0"].in_group == "stem.0"
    assert (by_name["fc"].in_group, by_name["fc"].in_per_channel) == ("layer2.conv2", 1)
    assert by_name["fc"].group is None  # the output layer keeps its width


def test_kernels_match_the_built_model_for_random_joint_plans(tiny) -> None:
    model, inputs, shapes = tiny
    knobs = load_space("cnn").knobs(discover(model, inputs))
    for plan in random_plans(knobs, 12, seed=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = bake(apply(model, plan, inputs))
        assert [(k.cin, k.cout) for k in shapes.kernels(plan)] == _real_channels(built)


def test_factorized_layer_is_two_kernels_with_the_rank_between(tiny) -> None:
    _, _, shapes = tiny
    plan = Plan(layers={"layer2.conv1": LayerConfig(rank_ratio=0.25)})
    kernels = shapes.kernels(plan)
    assert len(kernels) == len(shapes.layers) + 1
    first, second = kernels[3], kernels[4]  # stem, layer1 x2, then layer2.conv1 in two
    assert first.cin == 16 and second.cout == 32 and first.cout == second.cin == 12  # 48 x 0.25
    assert '"kernel": [3, 1]' in first.geometry and '"kernel": [1, 3]' in second.geometry
    # The stride-2 halves: 16x16 in, 8x8 out.
    assert second.out_elems == 32 * 8 * 8


def test_compute_format_follows_what_deploy_realizes(tiny) -> None:
    _, _, shapes = tiny
    plan = Plan(
        layers={
            "stem.0": LayerConfig(weight_bits=8, act_bits=8),
            "layer1.conv1": LayerConfig(weight_bits=8, act_bits=32),  # conv: size only
            "layer1.conv2": LayerConfig(weight_bits=4),
            "layer2.conv1": LayerConfig(weight_bits=16),
            "fc": LayerConfig(weight_bits=8, act_bits=32),  # dynamic int8 Linear
        }
    )
    compute = [k.compute for k in shapes.kernels(plan)]
    bf16 = BF16 if shapes.bf16_compute else FP32
    assert compute == [INT8, FP32, FP32, bf16, FP32, FP32, INT8]
    assert {k.compute for k in shapes.kernels(Plan())} == {FP32}


def test_a_model_without_an_lstm_keeps_no_recurrence(tiny) -> None:
    _, _, shapes = tiny
    assert not shapes.keeps_recurrence(Plan())
    assert not shapes.keeps_recurrence(Plan(layers={"layer1.conv1": LayerConfig(rank_ratio=0.5)}))


def test_round_trips_through_json(tiny) -> None:
    _, _, shapes = tiny
    again = ModelShapes.from_dict(shapes.to_dict())
    plan = Plan(layers={"layer2.conv1": LayerConfig(keep_ratio=0.5, rank_ratio=0.5)})
    assert again.kernels(plan) == shapes.kernels(plan)


def test_boundary_elems_counts_tensors_between_int8_and_float_layers(tiny) -> None:
    _, _, shapes = tiny
    int8 = LayerConfig(weight_bits=8, act_bits=8)
    assert shapes.boundary_elems(Plan()) == 0
    everywhere = {x.name: int8 for x in shapes.layers}
    assert shapes.boundary_elems(Plan(layers=everywhere)) == 0
    # layer1.conv1 alone in int8 reads the stem's tensor (16 channels, 16x16) and writes its
    # own (16 channels, 16x16) for a float layer1.conv2: both are converted.
    assert shapes.boundary_elems(Plan(layers={"layer1.conv1": int8})) == 2 * 16 * 16 * 16
    halved = {"layer1.conv1": int8, "stem.0": LayerConfig(keep_ratio=0.5)}
    assert shapes.boundary_elems(Plan(layers=halved)) == (8 + 16) * 16 * 16


_TIMED = (nn.Linear, nn.LSTM)


def _calls(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, int, int]]:
    """(type, in, out) of every Linear/LSTM call of one forward pass, in order."""
    found: list[tuple[str, int, int]] = []

    def record(module: nn.Module, *_: object) -> None:
        if isinstance(module, nn.LSTM):
            found.append(("LSTM", module.input_size, module.hidden_size))
        else:
            found.append(("Linear", module.in_features, module.out_features))

    hooks = [m.register_forward_hook(record) for m in model.modules() if type(m) in _TIMED]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def test_an_lstm_is_one_kernel_whole_and_its_linears_per_step_unrolled() -> None:
    torch.manual_seed(0)
    model, inputs = LstmRows().eval(), (torch.randn(1, 5, 6),)
    layers = discover(model, inputs)
    shapes = ModelShapes.from_model(model, inputs, layers)
    lstm = shapes.layers[0]
    assert (lstm.geometry["type"], lstm.geometry["in_size"], lstm.out_size) == ("LSTM", [5], 5)
    plans = [
        Plan(),
        Plan(layers={"lstm": LayerConfig(keep_ratio=0.5)}),
        Plan(layers={"lstm": LayerConfig(rank_ratio=0.5)}),
        Plan(layers={"lstm": LayerConfig(weight_bits=8), "head": LayerConfig(weight_bits=8)}),
        *random_plans(load_space("default").knobs(layers), 12, seed=0),
    ]
    for plan in plans:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = bake(apply(model, plan, inputs))
        kernels = shapes.kernels(plan)
        assert [(json.loads(k.geometry)["type"], k.cin, k.cout) for k in kernels] == _calls(
            built, inputs
        ), plan
    whole = shapes.kernels(Plan())
    unrolled = shapes.kernels(Plan(layers={"lstm": LayerConfig(weight_bits=8)}))
    assert [k.compute for k in whole] == [FP32, FP32]
    assert [k.compute for k in unrolled] == [INT8] * 6 + [FP32]  # projection, 5 steps, head
    assert shapes.quantized(Plan(layers={"lstm": LayerConfig(weight_bits=8)}))
    assert not shapes.quantized(Plan(layers={"lstm": LayerConfig(weight_bits=4)}))
    assert shapes.keeps_recurrence(Plan(layers={"lstm": LayerConfig(keep_ratio=0.5)}))
    assert not shapes.keeps_recurrence(Plan(layers={"lstm": LayerConfig(rank_ratio=0.5)}))
    assert not shapes.keeps_recurrence(Plan(layers={"lstm": LayerConfig(weight_bits=16)}))


@pytest.fixture(scope="module")
def same_pad() -> tuple[nn.Module, tuple[torch.Tensor, ...], ModelShapes]:
    model = make_same_pad_net()
    inputs = (torch.randn(1, 1, 16, 16),)
    return model, inputs, ModelShapes.from_model(model, inputs, discover(model, inputs))


def _outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Size]:
    modules = dict(model.named_modules())
    found: dict[str, torch.Size] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda m, a, out, name=name: found.__setitem__(name, out.shape)
        )
        for name in SAME_PAD_LAYERS
    ]
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    return found


def test_subclassed_layers_padding_in_forward_are_all_kernels(same_pad) -> None:
    # Class names were matched before: these Conv2d/Linear subclasses were all left out.
    model, inputs, shapes = same_pad
    assert [layer.name for layer in shapes.layers] == SAME_PAD_LAYERS
    assert [layer.geometry["type"] for layer in shapes.layers] == ["Conv2d"] * 4 + ["Linear"] * 2
    assert shapes.missing(discover(model, inputs)) == []
    # Each kernel rebuilt from its geometry computes the layer's real output: the padding the
    # subclass adds in forward is in the input size (stem: 16 -> 17, one-sided).
    real = _outputs(model, inputs)
    by_name = {layer.name: layer for layer in shapes.layers}
    assert by_name["stem.0"].geometry["in_size"] == [17, 17]
    assert by_name["down.0"].geometry["in_size"] == [11, 11]
    for layer in shapes.layers:
        kernel = build_layer(layer.geometry, layer.in_features, layer.out_features)
        out = kernel(example_input(layer.geometry, layer.in_features, 1))
        assert out.shape == real[layer.name], layer.name
        assert layer.out_size * layer.out_features == out[0].numel()


def test_subclassed_layers_kernels_match_the_built_model(same_pad) -> None:
    model, inputs, shapes = same_pad
    knobs = load_space("cnn").knobs(discover(model, inputs))
    grid = lut_grid(shapes, knobs, None)  # what the profile times: every kernel a plan runs
    for plan in random_plans(knobs, 8, seed=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # low_rank refuses the subclasses, as shapes know
            built = bake(apply(model, plan, inputs))
        kernels = shapes.kernels(plan)
        assert [(k.cin, k.cout) for k in kernels] == _real_channels(built), plan
        assert all(key in grid for key in {(k.geometry, k.compute) for k in kernels})


def test_a_layer_the_latency_model_cannot_time_fails_loudly(same_pad) -> None:
    model, inputs, shapes = same_pad
    layers = discover(model, inputs)
    odd = [*layers[:-1], replace(layers[-1], type="Conv3d")]
    with pytest.raises(AutocompressError, match=r"no kernel for 1 layer.*fc \(Conv3d\)"):
        ModelShapes.from_model(model, inputs, odd)
    partial = ModelShapes.from_dict({**shapes.to_dict(), "layers": shapes.to_dict()["layers"][:4]})
    assert partial.missing(layers) == ["hidden", "fc"]
