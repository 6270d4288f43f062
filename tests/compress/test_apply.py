"""The whole pipeline: every method in one plan, the deployable build, and its size count."""

from __future__ import annotations

import random

import pytest
import torch

from autocompress import LayerConfig, Plan, apply
from autocompress.compress.apply import bake, deploy
from autocompress.compress.quant import WEIGHT_BITS
from autocompress.compress.quantize import FakeQuantLayer, quantized_weight_bytes
from autocompress.compress.size import compressed_size_bytes, size_bytes, weight_storage_bytes
from tests.conftest import TINY_GROUPS, TinyResNet

JOINT = Plan(
    layers={
        "stem.0": LayerConfig(keep_ratio=0.5),
        "layer1.conv2": LayerConfig(keep_ratio=0.5, weight_bits=8, act_bits=8),
        "layer1.conv1": LayerConfig(rank_ratio=0.25),
        "layer2.conv1": LayerConfig(sparsity=0.5, sparsity_pattern="2:4", weight_bits=8),
        "layer2.conv2": LayerConfig(sparsity=0.9, weight_bits=16),
        "fc": LayerConfig(weight_bits=8, act_bits=8),
    }
)


def test_a_joint_plan_applies_every_method(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    model = apply(tiny_resnet, JOINT, tiny_input)
    names = dict(model.named_modules())
    assert model.stem[0].out_channels == 8  # pruned with its coupled partner ...
    assert model.layer1.conv2.inner.out_channels == 8  # ... which is also wrapped for fake quant
    assert "layer1.conv1.0" in names and "layer1.conv1.1" in names  # factorized
    assert isinstance(names["fc"], FakeQuantLayer)
    plain = bake(model)
    conv = plain.layer2.conv2
    assert float((conv.weight == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    groups = plain.layer2.conv1.weight.reshape(plain.layer2.conv1.weight.shape[0], -1, 4)
    assert bool(((groups != 0).sum(-1) <= 2).all())  # 2:4
    assert model(tiny_input).shape == (1, 10)
    assert tiny_resnet.stem[0].out_channels == 16  # the dense model is untouched


def test_deploy_runs_real_int8_close_to_the_float_model(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    plan = Plan(layers={n: LayerConfig(weight_bits=8, act_bits=8) for n in TINY_GROUPS})
    model = apply(tiny_resnet, plan, tiny_input)
    torch.manual_seed(0)
    batches = [(torch.randn(8, 1, 16, 16),) for _ in range(4)]
    real = deploy(model, plan, batches[0][0], batches)
    reference = bake(model)
    with torch.no_grad():
        x = batches[0][0]
        agree = (real(x).argmax(1) == reference(x).argmax(1)).float().mean()
    assert float(agree) >= 0.75
    assert set(real.layers) == set(TINY_GROUPS)


def test_size_of_a_pruned_only_plan_is_its_saved_bytes(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    plan = Plan(layers={m: LayerConfig(keep_ratio=0.5) for m in TINY_GROUPS["stem.0"]})
    plain = bake(apply(tiny_resnet, plan, tiny_input))
    assert compressed_size_bytes(plain, plan) == size_bytes(plain)


def test_weight_storage_bytes_by_hand() -> None:
    weight = torch.zeros(64, 100)
    weight[:, :10] = 1.0  # 640 nonzeros of 6400
    assert weight_storage_bytes(weight, 32) == min(6400 * 4, 800 + 640 * 4, 640 * 8 + 8 * 65)
    assert weight_storage_bytes(torch.ones(64, 100), 8) == quantized_weight_bytes(
        torch.ones(64, 100), 8
    )


def test_size_shrinks_with_every_method_over_random_plans(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    rng = random.Random(0)
    dense = size_bytes(tiny_resnet)
    for _ in range(20):
        layers = {}
        for name in ("layer1.conv1", "layer2.conv1", "fc"):
            bits = rng.choice(WEIGHT_BITS)
            layers[name] = LayerConfig(
                sparsity=rng.choice([0.0, 0.5, 0.9]),
                weight_bits=bits,
                act_bits=rng.choice([32, 8]) if bits == 8 else 32,
            )
        plan = Plan(layers=layers)
        plain = bake(apply(tiny_resnet, plan, tiny_input))
        counted = compressed_size_bytes(plain, plan)
        assert counted <= dense
        # A plan that quantizes or sparsifies something always saves bytes over plain fp32.
        if any(c.weight_bits < 32 or c.sparsity > 0 for c in plan.layers.values()):
            assert counted < size_bytes(plain)


def test_a_layer_a_method_cannot_handle_warns_and_stays(tiny_input: torch.Tensor) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.Conv2d(4, 4, 3, padding=1, groups=4),  # depthwise: no low-rank form
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 16 * 16, 10),
    )
    with pytest.warns(UserWarning, match="'1'"):
        out = apply(model, Plan(layers={"1": LayerConfig(rank_ratio=0.5)}), tiny_input)
    assert isinstance(out[1], torch.nn.Conv2d)
