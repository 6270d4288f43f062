"""Weight sparsity: exact masks, zeros kept through fine-tuning, baking, bytes, CSR Linear."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress import sparsify as sparsify_module
from autocompress.compress.sparsify import (
    SparseLinear,
    bake,
    faster_as_sparse,
    magnitude_mask,
    sparse_weight_bytes,
    sparsify,
    weight_bytes_by_format,
)
from autocompress.hardware.timing import Measurement
from tests.conftest import make_tiny_resnet


def _saved_bytes(module: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _with_sparsity(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    return weight * magnitude_mask(weight, sparsity, "unstructured")


@pytest.mark.parametrize("shape", [(32, 16), (8, 4, 3, 3), (6, 5, 7)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.95])
def test_unstructured_mask_zeroes_exactly_the_smallest(
    shape: tuple[int, ...], sparsity: float
) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape)
    keep = magnitude_mask(weight, sparsity, "unstructured")
    assert keep.dtype == torch.bool and keep.shape == weight.shape
    assert int((~keep).sum()) == round(sparsity * weight.numel())
    if sparsity > 0:
        assert weight[keep].abs().min() >= weight[~keep].abs().max()


def test_unstructured_mask_counts_ties_exactly() -> None:
    keep = magnitude_mask(torch.ones(10, 10), 0.37, "unstructured")
    assert int((~keep).sum()) == 37


@pytest.mark.parametrize("shape", [(16, 32), (8, 4, 3, 3), (4, 8, 5)])
def test_two_four_keeps_the_two_largest_of_every_four_inputs(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape)
    keep = magnitude_mask(weight, 0.5, "2:4")
    groups = keep.reshape(shape[0], -1, 4)  # conv: in_channels*kh*kw flattened per output
    assert (groups.sum(-1) == 2).all()
    magnitude = weight.abs().reshape(shape[0], -1, 4)
    kept_min = magnitude.masked_fill(~groups, float("inf")).min(-1).values
    dropped_max = magnitude.masked_fill(groups, -1.0).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_n_m_patterns_check_sparsity_and_shape() -> None:
    weight = torch.randn(4, 8)
    assert (magnitude_mask(weight, 0.75, "1:4").reshape(4, 2, 4).sum(-1) == 1).all()
    with pytest.raises(ValueError, match=r"fc.*2:4.*0\.5"):
        magnitude_mask(weight, 0.6, "2:4", name="fc")
    with pytest.raises(ValueError, match=r"fc.*2:4.*multiple of 4.*6"):
        magnitude_mask(torch.randn(4, 6), 0.5, "2:4", name="fc")
    with pytest.raises(ValueError, match="unknown sparsity pattern"):
        magnitude_mask(weight, 0.5, "block")


def _masked_positions(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach() == 0 for n in names}


def test_sparsify_keeps_zeros_through_fine_tuning() -> None:
    model = make_tiny_resnet()
    settings = {"layer1.conv1": (0.7, "unstructured"), "fc": (0.5, "2:4")}
    assert sparsify(model, settings) == ["layer1.conv1", "fc"]
    zeros = _masked_positions(model, list(settings))
    assert int(zeros["layer1.conv1"].sum()) == round(0.7 * 16 * 16 * 9)
    assert int(zeros["fc"].sum()) == 5 * 32
    before = {n: model.get_submodule(n).weight.detach().clone() for n in settings}

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(3)
    for _ in range(20):
        x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for name in settings:
        weight = model.get_submodule(name).weight.detach()
        assert (weight[zeros[name]] == 0).all()
        assert not torch.equal(weight[~zeros[name]], before[name][~zeros[name]])


def test_bake_leaves_plain_parameters_with_the_zeros() -> None:
    model = make_tiny_resnet()
    sparsify(model, {"layer2.conv2": (0.8, "unstructured"), "fc": (0.5, "2:4")})
    x = torch.randn(2, 1, 16, 16)
    expected = model(x)
    zeros = _masked_positions(model, ["layer2.conv2", "fc"])
    bake(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for name, zero in zeros.items():
        weight = model.get_submodule(name).weight
        assert type(weight) is nn.Parameter
        assert (weight[zero] == 0).all() and (weight[~zero] != 0).all()
    assert torch.equal(model(x), expected)
    assert set(model.state_dict()) == set(make_tiny_resnet().state_dict())


def test_sparsify_again_replaces_the_mask() -> None:
    model = make_tiny_resnet()
    sparsify(model, {"fc": (0.5, "unstructured")})
    sparsify(model, {"fc": (0.9, "unstructured")})
    assert len(model.fc.parametrizations.weight) == 1
    assert int((model.fc.weight == 0).sum()) == round(0.9 * 320)


def test_layer_that_cannot_take_two_four_is_left_unchanged_with_a_warning() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    weight = model[0].weight.detach().clone()
    with pytest.warns(UserWarning, match=r"'0'.*multiple of 4"):
        handled = sparsify(model, {"0": (0.5, "2:4"), "2": (0.5, "2:4")})
    assert handled == ["2"]
    assert not parametrize.is_parametrized(model[0])
    assert torch.equal(model[0].weight, weight)


def test_missing_layer_warns_instead_of_crashing() -> None:
    model = make_tiny_resnet()
    with pytest.warns(UserWarning, match="'layer9.conv1'.*no such layer"):
        assert sparsify(model, {"layer9.conv1": (0.5, "unstructured")}) == []


def test_factorized_container_masks_both_leaves() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("proj", nn.Sequential(nn.Linear(16, 8, bias=False), nn.Linear(8, 12)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sparsify(model, {"proj": (0.5, "2:4")}) == ["proj"]
    for leaf in model.proj:
        assert parametrize.is_parametrized(leaf, "weight")
        assert ((leaf.weight != 0).reshape(leaf.out_features, -1, 4).sum(-1) == 2).all()


def test_sparse_weight_bytes_picks_the_smallest_format() -> None:
    torch.manual_seed(0)
    dense = torch.randn(1024, 1024)
    # 0%: dense 1024*1024*4 beats bitmask (131072 + 4194304) and CSR.
    assert sparse_weight_bytes(dense) == 4_194_304
    assert sparse_weight_bytes(dense, bits=8) == 1_048_576
    # 95%: nnz = round(0.05 * 1048576) = 52429. bitmask 131072 + 209716 = 340788;
    # CSR 209716 values + 209716 int32 columns + 1025 * 8 row pointers = 427632.
    at_95 = _with_sparsity(dense, 0.95)
    assert weight_bytes_by_format(at_95) == {
        "dense": 4_194_304,
        "bitmask": 340_788,
        "csr": 427_632,
    }
    assert sparse_weight_bytes(at_95) == 340_788
    # 98%: nnz = 20972. bitmask 131072 + 83888 = 214960; CSR 83888 + 83888 + 8200 = 175976.
    at_98 = _with_sparsity(dense, 0.98)
    assert sparse_weight_bytes(at_98) == 175_976
    # 98% at 8 bits: bitmask 131072 + 20972 = 152044; CSR 20972 + 83888 + 8200 = 113060.
    assert sparse_weight_bytes(at_98, bits=8) == 113_060


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_dense(bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(_with_sparsity(linear.weight, 0.8))
    sparse = SparseLinear.from_dense(linear)
    with torch.no_grad():
        for x in (torch.randn(64), torch.randn(5, 64), torch.randn(2, 3, 64)):
            torch.testing.assert_close(sparse(x), linear(x), atol=1e-5, rtol=0)
            assert sparse(x).shape == linear(x).shape


def test_sparse_linear_from_a_masked_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16))
    sparsify(model, {"0": (0.5, "2:4")})
    sparse = SparseLinear.from_dense(model[0])
    assert sparse.values.numel() == 16 * 16
    x = torch.randn(4, 32)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-5, rtol=0)


def test_sparse_linear_saves_csr_size_and_reloads() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(1024, 1024)
    with torch.no_grad():
        linear.weight.copy_(_with_sparsity(linear.weight, 0.95))
    sparse = SparseLinear.from_dense(linear)
    saved, dense_saved = _saved_bytes(sparse), _saved_bytes(linear)
    assert saved < dense_saved / 8
    # The artifact matches the exact CSR count (plus the bias) within 2%.
    expected = weight_bytes_by_format(linear.weight)["csr"] + 4 * 1024
    assert abs(saved - expected) / expected < 0.02

    # A state_dict with a different number of nonzeros loads into any SparseLinear.
    other = nn.Linear(1024, 1024)
    with torch.no_grad():
        other.weight.copy_(_with_sparsity(other.weight, 0.5))
    target = SparseLinear.from_dense(other)
    x = torch.randn(3, 1024)
    with torch.no_grad():
        target(x)  # builds the cached kernel tensor, which loading must invalidate
        target.load_state_dict(sparse.state_dict())
        torch.testing.assert_close(target(x), linear(x), atol=1e-5, rtol=0)


def test_faster_as_sparse_measures_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_measure(candidate, reference, **kwargs) -> Measurement:  # type: ignore[no-untyped-def]
        candidate(), reference()
        calls.append(kwargs["threads"])
        ratio = 0.5 if len(calls) == 1 else 1.2
        return Measurement(1.0, 1.0, 1.0, 2.0, ratio, 5, 3, kwargs["threads"], 0)

    monkeypatch.setattr(sparsify_module, "measure_latency", fake_measure)
    monkeypatch.setattr(sparsify_module, "_FASTER_CACHE", {})
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    with torch.no_grad():
        linear.weight.copy_(_with_sparsity(linear.weight, 0.9))
    assert faster_as_sparse(linear, 4) is True
    assert faster_as_sparse(linear, 4) is True  # cached, not measured again
    assert faster_as_sparse(linear, 4, threads=2) is False  # another key: measured
    assert calls == [1, 2]


def test_baking_a_copy_leaves_the_original_masked_model_working() -> None:
    import copy

    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    sparsify(model, {"0": (0.5, "unstructured")})
    baked = copy.deepcopy(model)
    bake(baked)
    x = torch.randn(3, 8)
    assert torch.equal(model(x), baked(x))  # the original still has its masked weight
    assert type(baked[0]) is nn.Linear and parametrize.is_parametrized(model[0])
