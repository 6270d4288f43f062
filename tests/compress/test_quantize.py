"""Bit-widths: fake quantization for fine-tuning, weight bytes, and the realized int8 model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from autocompress.compress.quantize import (
    FakeQuantLayer,
    fake_quantize,
    quantize_weight,
    quantized_weight_bytes,
    strip_fake_quant,
)
from autocompress.compress.quantize_real import (
    _Bf16Compute,
    compile_float,
    quantized_layers,
    realize,
)
from tests.conftest import SAME_PAD_LAYERS, make_same_pad_net


class TinyCNN(nn.Module):
    """conv-bn-relu x2 -> global average pool -> Linear; 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _tiny(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    for bn in (model.b1, model.b2):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    return model.eval()


def _batches(n: int, batch: int = 16, seed: int = 1) -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 8, 8, generator=gen),) for _ in range(n)]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --- fake quantization --------------------------------------------------------------------


def test_int8_close_to_float_int4_further_and_32_bit_unchanged() -> None:
    model = _tiny()
    (x,) = _batches(1)[0]
    ref = model(x)
    errors = {}
    for bits in ((8, 8), (8, 32), (4, 32), (16, 32)):
        fq = copy.deepcopy(model)
        assert fake_quantize(fq, {"c1": bits, "c2": bits, "fc": bits}) == ["c1", "c2", "fc"]
        assert isinstance(fq.c2, FakeQuantLayer) and isinstance(fq.c2.inner, nn.Conv2d)
        errors[bits] = _rel_err(fq(x), ref)
    assert errors[(16, 32)] < 0.005
    assert 0 < errors[(8, 32)] < 0.02 and errors[(8, 8)] < 0.03
    assert errors[(4, 32)] > 3 * errors[(8, 32)]

    same = copy.deepcopy(model)
    assert fake_quantize(same, {"c1": (32, 32), "fc": (32, 32)}) == ["c1", "fc"]
    assert isinstance(same.c1, nn.Conv2d) and isinstance(same.fc, nn.Linear)
    assert torch.equal(same(x), ref)


def test_int8_weights_on_a_per_channel_grid() -> None:
    model = _tiny()
    fake_quantize(model, {"c2": (8, 32), "fc": (4, 32)})
    for layer, qmax in ((model.c2, 127), (model.fc, 7)):
        w = layer.inner.weight.detach()
        scale = w.abs().reshape(w.shape[0], -1).amax(1) / qmax
        q = quantize_weight(w, layer.weight_bits).reshape(w.shape[0], -1) / scale[:, None]
        assert torch.allclose(q, q.round(), atol=1e-3)
        assert int(q.round().abs().max()) == qmax


def test_straight_through_gradients_reach_the_weights() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    fq = FakeQuantLayer(linear, 8, 32)
    x = torch.randn(5, 6)
    fq(x).square().sum().backward()
    # With a straight-through estimator the weight's gradient is that of the rounded weight.
    w_q = quantize_weight(linear.weight.detach(), 8).requires_grad_()
    torch.nn.functional.linear(x, w_q, linear.bias.detach()).square().sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    assert torch.allclose(linear.weight.grad, w_q.grad, atol=1e-6)

    for weight_bits, act_bits in ((4, 32), (16, 32), (8, 8)):
        conv = nn.Conv2d(3, 4, 3)
        layer = FakeQuantLayer(conv, weight_bits, act_bits)
        layer(torch.randn(2, 3, 6, 6, requires_grad=True)).sum().backward()
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
        assert conv.weight.grad.abs().sum() > 0


def test_activation_range_moves_in_training_and_freezes_in_eval() -> None:
    layer = FakeQuantLayer(nn.Linear(4, 2), 8, 8, momentum=0.5)
    layer.train()
    layer(torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))
    assert (float(layer.act_min), float(layer.act_max)) == (-1.0, 2.0)
    layer(torch.tensor([[-3.0, 0.0, 0.0, 6.0]]))
    assert (float(layer.act_min), float(layer.act_max)) == (-2.0, 4.0)
    layer.eval()
    out = layer(torch.tensor([[-100.0, 0.0, 0.0, 100.0]]))
    assert (float(layer.act_min), float(layer.act_max)) == (-2.0, 4.0)
    # Frozen range: inputs beyond it are clipped to it.
    clipped = layer(torch.tensor([[-2.0, 0.0, 0.0, 4.0]]))
    assert torch.allclose(out, clipped)


def test_strip_fake_quant_restores_plain_layers_with_trained_weights() -> None:
    model = _tiny()
    original = copy.deepcopy(model)
    fake_quantize(model, {"c1": (8, 8), "c2": (4, 32), "fc": (16, 32)})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (x,) = _batches(1)[0]
    model(x).square().mean().backward()
    opt.step()
    trained = {k: v.clone() for k, v in model.state_dict().items() if "inner" in k}
    strip_fake_quant(model)
    assert not any(isinstance(m, FakeQuantLayer) for m in model.modules())
    assert type(model.c1) is nn.Conv2d and type(model.fc) is nn.Linear
    assert set(model.state_dict()) == set(original.state_dict())
    for key, value in trained.items():
        assert torch.equal(model.state_dict()[key.replace("inner.", "")], value)
    assert not torch.equal(model.c1.weight, original.c1.weight)


def test_containers_are_quantized_leaf_by_leaf() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(8, 3, bias=False), nn.Linear(3, 8)), nn.ReLU())
    assert fake_quantize(model, {"0": (8, 8)}) == ["0"]
    assert all(isinstance(m, FakeQuantLayer) for m in model[0])
    model(torch.randn(2, 8)).sum().backward()


def test_layers_it_cannot_handle_are_left_unchanged_with_a_warning() -> None:
    model = _tiny()
    before = copy.deepcopy(model.state_dict())
    plan = {"b1": (8, 8), "nope": (8, 8), "c1": (8, 4), "fc": 8, "c2": (8, 8)}
    with pytest.warns(UserWarning) as record:
        handled = fake_quantize(model, plan)
    assert handled == ["c2"]
    messages = " ".join(str(w.message) for w in record)
    for name in ("'b1'", "'nope'", "'c1'", "'fc'"):
        assert name in messages
    assert type(model.c1) is nn.Conv2d and type(model.fc) is nn.Linear
    with pytest.warns(UserWarning, match="already fake-quantized"):
        assert fake_quantize(model, {"c2": (8, 8)}) == []
    strip_fake_quant(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_quantized_weight_bytes_by_hand() -> None:
    conv = torch.zeros(16, 8, 3, 3)  # 1152 values, 16 output channels
    assert quantized_weight_bytes(conv, 32) == 4608
    assert quantized_weight_bytes(conv, 16) == 2304
    assert quantized_weight_bytes(conv, 8) == 1152 + 16 * 4 + 16 * 8  # + int64 zero points
    assert quantized_weight_bytes(conv, 4) == 576 + 16 * 4
    odd = torch.zeros(3, 5)  # 15 int4 values take 8 bytes
    assert quantized_weight_bytes(odd, 4) == 8 + 3 * 4
    with pytest.raises(ValueError, match="weight_bits"):
        quantized_weight_bytes(odd, 2)


# --- realized (real-kernel) model ---------------------------------------------------------


def test_realize_all_int8_matches_float_and_fake_quant() -> None:
    model = _tiny()
    plan = {"c1": (8, 8), "c2": (8, 8), "fc": (8, 8)}
    calib = _batches(4)
    real = realize(model, plan, calib[0], calib, compile=False)
    assert quantized_layers(real.graph_module) == {"c1": "static", "c2": "static", "fc": "static"}
    assert real.layers == {"c1": "int8 static", "c2": "int8 static", "fc": "int8 static"}
    (x,) = _batches(1, batch=64, seed=7)[0]
    ref, out = model(x), real(x)
    assert _rel_err(out, ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9
    assert not torch.equal(out, ref)
    # The graph holds exactly the counted int8 weight bytes plus the float biases (BN folded).
    stored = [*real.graph_module.parameters(), *real.graph_module.buffers()]
    counted = sum(quantized_weight_bytes(m.weight, 8) for m in (model.c1, model.c2, model.fc))
    biases = 4 * (8 + 16 + 10)
    assert sum(t.numel() * t.element_size() for t in stored) == counted + biases
    # The fake-quantized model (ranges set on the same batches) computes nearly the same thing.
    fq = copy.deepcopy(model)
    fake_quantize(fq, plan)
    with torch.no_grad():
        for (batch,) in calib:
            fq(batch)
    # (Ranges differ: fake quantization keeps min/max, the calibration a histogram's choice.)
    assert _rel_err(out, fq(x)) < 0.03


def test_realize_mixed_plan_keeps_unplanned_layers_float() -> None:
    model = _tiny()
    calib = _batches(2)
    real = realize(
        model, {"c1": (8, 8), "c2": (32, 32), "fc": (8, 32)}, calib[0], calib, compile=False
    )
    # c1 static int8, fc dynamic int8, c2 untouched in the same graph.
    assert quantized_layers(real.graph_module) == {"c1": "static", "fc": "dynamic"}
    weights = {n.target for n in real.graph_module.graph.nodes if n.op == "get_attr"}
    assert any("c2" in str(t) for t in weights)
    (x,) = _batches(1, seed=3)[0]
    assert _rel_err(real(x), model(x)) < 0.05


def test_realize_bf16_and_size_only_layers() -> None:
    model = _tiny()
    calib = _batches(1)
    plan = {"c1": (16, 32), "c2": (4, 32), "fc": (8, 32)}
    real = realize(
        model, {**plan, "c2": (8, 32)}, calib[0], calib, bf16_compute=True, compile=False
    )
    assert real.layers["c1"] == "bf16"
    assert real.layers["c2"] == "int8 weights, size only"
    assert isinstance(real.graph_module, torch.fx.GraphModule)  # fc is int8: compiled
    # Without an int8 kernel there is nothing to compile: it runs eagerly, like a float plan.
    eager = realize(model, {"c1": (16, 32), "c2": (4, 32)}, calib[0], calib, bf16_compute=True)
    assert not isinstance(eager.graph_module, torch.fx.GraphModule)
    assert isinstance(eager.graph_module.c1, _Bf16Compute)
    real = realize(model, plan, calib[0], calib, bf16_compute=False, compile=False)
    assert real.layers == {
        "c1": "bf16 weights, size only",
        "c2": "int4 weights, size only",
        "fc": "int8 dynamic",
    }
    (x,) = calib[0]
    assert _rel_err(real(x), model(x)) < 0.2
    assert torch.equal(model.c1.weight, _tiny().c1.weight), "realize must not modify the model"


def test_realize_warns_about_layers_it_cannot_handle() -> None:
    model = _tiny()
    calib = _batches(1)
    with pytest.warns(UserWarning, match="'b1'"):
        real = realize(model, {"b1": (8, 8), "c2": (8, 8)}, calib[0], calib, compile=False)
    assert real.layers == {"c2": "int8 static"}
    with pytest.warns(UserWarning, match="'fc'.*bits"):
        real = realize(model, {"fc": (2, 32)}, calib[0], calib, compile=False)
    assert real.layers == {}


def test_realize_compiled_runs_real_int8_kernels() -> None:
    model = _tiny()
    calib = _batches(2)
    counters.clear()
    real = realize(model, {"c1": (8, 8), "c2": (8, 8), "fc": (8, 8)}, calib[0], calib)
    # inductor matched the int8 patterns and packed the weights for oneDNN.
    assert counters["inductor"]["qconv_weight_prepack_matcher_count"] == 2
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 1
    (x,) = calib[1]
    reference = real.graph_module(x)  # the converted graph, run op by op
    out = real(x)
    assert _rel_err(out, reference) < 0.02
    assert _rel_err(out, model(x)) < 0.05
    # Like any model: eval()/train() do not fail, and no gradients are recorded.
    real.eval()
    assert not real(x).requires_grad


def test_realize_packs_int8_weights_in_inference_mode_too() -> None:
    model = _tiny()
    calib = _batches(2)
    real = realize(model, {"c1": (8, 8), "c2": (8, 8), "fc": (8, 8)}, calib[0], calib)
    (x,) = calib[1]
    with torch.no_grad():
        real(x)
    # dynamo compiles a call in inference mode apart; it must be frozen (prepacked int8) too:
    # on all-MiniLM-L6-v2 an unfrozen int8 graph ran 3x slower, as slow as fp32.
    counters.clear()
    with torch.inference_mode():
        out = real(x)
    assert counters["inductor"]["qconv_weight_prepack_matcher_count"] == 2
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 1
    assert _rel_err(out, model(x)) < 0.05


def test_compile_float_is_the_float_model_compiled_without_int8() -> None:
    model = _tiny()
    before = copy.deepcopy(model.state_dict())
    (x,) = _batches(1)[0]
    counters.clear()
    twin = compile_float(model, (x,))
    assert twin.compiled and twin.layers == {}
    assert counters["inductor"]["qconv_weight_prepack_matcher_count"] == 0
    with torch.inference_mode():  # as it is timed, with a batch of another size
        assert _rel_err(twin(x[:3]), model(x[:3])) < 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_static_int8_conv1d_stays_float_and_runs_compiled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(160, 10)
    ).eval()
    x = torch.randn(1, 1, 40)
    calib = [(torch.randn(16, 1, 40),) for _ in range(2)]
    with pytest.warns(UserWarning, match="'0' stays fp32: static int8 Conv1d"):
        real = realize(model, {"0": (8, 8), "3": (8, 8)}, (x,), calib)
    assert real.layers["0"] == "int8 weights, size only"
    assert real(x).shape == (1, 10)
    assert float((real(x) - model(x)).abs().max()) < 0.1


class _Tokens(nn.Module):
    """Token ids and a mask of a fixed length, like a text model traced at 128 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(self.embed(ids)) * mask.unsqueeze(-1)
        return hidden.sum(1) / mask.sum(1, keepdim=True)


def test_static_int8_calibrates_on_batches_shorter_than_the_example() -> None:
    torch.manual_seed(0)
    model = _Tokens().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    calibration = [
        (torch.randint(1, 50, (4, n)), torch.ones(4, n, dtype=torch.long)) for n in (7, 9)
    ]
    real = realize(model, {"proj": (8, 8)}, example, calibration, compile=False)
    assert float((real(*example) - model(*example)).abs().max()) < 0.1


def test_realize_quantizes_subclassed_layers_that_pad_in_forward() -> None:
    # The int8 quantizer matched the recorded class name exactly: every layer stayed fp32.
    model = make_same_pad_net()
    gen = torch.Generator().manual_seed(3)
    calib = [(torch.randn(8, 1, 16, 16, generator=gen),) for _ in range(3)]
    plan = {name: (8, 8) for name in SAME_PAD_LAYERS}
    real = realize(model, plan, calib[0], calib, compile=False)
    assert quantized_layers(real.graph_module) == dict.fromkeys(SAME_PAD_LAYERS, "static")
    (x,) = calib[0]
    with torch.no_grad():
        assert _rel_err(real(x), model(x)) < 0.05


class _SharedActivation(nn.Module):
    """One ReLU6 module applied after two convolutions, as EfficientNet-Lite applies its
    `_swish` after the stem and before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_realize_quantizes_a_model_that_calls_one_activation_module_twice() -> None:
    # The quantizer grouped both calls into one pattern with two outputs and refused it.
    torch.manual_seed(0)
    model = _SharedActivation().eval()
    gen = torch.Generator().manual_seed(3)
    calib = [(torch.randn(8, 1, 16, 16, generator=gen),) for _ in range(3)]
    plan = dict.fromkeys(["conv1", "conv2", "fc"], (8, 8))
    real = realize(model, plan, calib[0], calib, compile=False)
    assert quantized_layers(real.graph_module) == dict.fromkeys(["conv1", "conv2", "fc"], "static")
    (x,) = calib[0]
    with torch.no_grad():
        assert _rel_err(real(x), model(x)) < 0.05


def test_fake_quant_keeps_the_forward_of_subclassed_layers() -> None:
    # FakeQuantLayer ran the plain conv op: a Conv2d that pads in forward lost its padding,
    # and every int8 trial of effnet-fmnist failed on mismatched sizes.
    model = make_same_pad_net()
    x = torch.randn(2, 1, 16, 16)
    quantized = copy.deepcopy(model)
    assert fake_quantize(quantized, dict.fromkeys(SAME_PAD_LAYERS, (8, 8))) == SAME_PAD_LAYERS
    with torch.no_grad():
        for name in ("stem.0", "down.0"):
            layer, fake = model.get_submodule(name), quantized.get_submodule(name)
            inner = torch.randn(2, layer.in_channels, 9, 9)
            assert fake(inner).shape == layer(inner).shape  # "same" padding kept
        assert _rel_err(quantized(x), model(x)) < 0.1
    quantized.train()
    quantized(x).sum().backward()  # gradients reach the wrapped weights (straight-through)
    assert quantized.get_submodule("stem.0").inner.weight.grad is not None
