"""Weight sharing: k-means codebooks that stay shared through fine-tuning, and their size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply, bake
from autocompress.compress.share import codebook, shared_bytes
from autocompress.compress.size import compressed_size_bytes, size_bytes
from autocompress.config import LayerConfig, Plan
from autocompress.errors import PlanError
from autocompress.space.sample import valid_settings


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


def _distinct(weight: torch.Tensor) -> int:
    return len(torch.unique(weight.detach()))


@pytest.mark.parametrize("values", [16, 64, 256])
def test_shared_layers_hold_at_most_k_values_through_fine_tuning_and_bake(values: int) -> None:
    dense, x = _mlp(), torch.randn(16, 32)
    model = apply(dense, Plan(layers={"0": LayerConfig(share_values=values)}), x)
    assert _distinct(model[0].weight) <= values
    assert _distinct(model[2].weight) > values  # the unplanned layer is untouched
    before = model[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        (model(x) - dense(x).detach() - 1.0).pow(2).mean().backward()
        optimizer.step()
    assert not torch.equal(model[0].weight, before)  # the centroids learnt
    assert _distinct(model[0].weight) <= values
    # weights that shared a value before still share one (each keeps its index)
    same = before.reshape(-1)[:, None] == before.reshape(-1)[None, :]
    after = model[0].weight.detach().reshape(-1)
    assert not (same & (after[:, None] != after[None, :])).any()
    baked = bake(model)
    assert type(baked[0]) is nn.Linear and _distinct(baked[0].weight) <= values
    torch.testing.assert_close(baked(x), model(x))


def test_more_shared_values_fit_the_weights_better() -> None:
    weight = _mlp()[0].weight.detach()
    errors = []
    for values in (16, 64, 256):
        centroids, index = codebook(weight, values)
        assert len(centroids) == values and index.shape == weight.shape
        errors.append(float((centroids[index] - weight).pow(2).mean()))
    assert errors[0] > errors[1] > errors[2] > 0
    # k-means beats 16 evenly spaced levels over the same range
    levels = torch.linspace(float(weight.min()), float(weight.max()), 16)
    even = levels[torch.argmin((weight.reshape(-1, 1) - levels).abs(), dim=1)].reshape(weight.shape)
    assert errors[0] < float((even - weight).pow(2).mean())


def test_a_weight_with_few_distinct_values_keeps_them_exactly() -> None:
    weight = torch.tensor([[0.5, -0.5, 0.25], [0.25, 0.5, 0.5]])
    centroids, index = codebook(weight, 16)
    assert torch.equal(centroids[index], weight)


@pytest.mark.parametrize("values", [16, 64, 256])
def test_the_size_is_packed_indices_plus_an_fp32_codebook(values: int) -> None:
    dense, x = _mlp(), torch.randn(4, 32)
    plan = Plan(layers={"0": LayerConfig(share_values=values)})
    baked = bake(apply(dense, plan, x))
    weight = baked[0].weight.detach()
    _, index = codebook(weight, values)
    bits = int(math.log2(values))
    # the real encoding: each index as `bits` bits, packed, and the codebook as float32
    packed = np.packbits(
        ((index.reshape(-1, 1).numpy() >> np.arange(bits)[::-1]) & 1).astype(np.uint8)
    )
    encoded = packed.nbytes + np.zeros(values, dtype=np.float32).nbytes
    assert shared_bytes(weight, values) == encoded
    assert compressed_size_bytes(baked, plan) == size_bytes(baked) - weight.numel() * 4 + encoded


@pytest.mark.parametrize("other", [{"weight_bits": 8}, {"sparsity": 0.5}])
def test_sharing_is_its_own_encoding(other: dict[str, object]) -> None:
    with pytest.raises(PlanError, match="share_values needs weight_bits 32 and sparsity 0"):
        LayerConfig(share_values=16, **other)
    assert LayerConfig(**valid_settings({"share_values": 16, **other})) == LayerConfig(**other)


@pytest.mark.parametrize("value", [1, 257, -16, 16.0, True])
def test_share_values_outside_2_to_256_are_refused(value: object) -> None:
    with pytest.raises(PlanError, match="share_values must be 0"):
        LayerConfig(share_values=value)
