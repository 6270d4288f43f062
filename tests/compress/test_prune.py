"""Structured pruning: exact identity, physically smaller models, round_to, and plan errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply
from autocompress.compress.prune import channel_counts, kept_channels, prune_channels
from autocompress.compress.size import size_bytes
from autocompress.config import LayerConfig, Plan
from autocompress.errors import PlanError
from autocompress.evaluate.metrics import param_count
from tests.conftest import TINY_GROUPS, TinyResNet


def _group_plan(ratios: dict[str, float], round_to: int | None = None) -> Plan:
    """A plan giving every member of each named TinyResNet group the group's ratio."""
    return Plan(
        layers={m: LayerConfig(keep_ratio=r) for g, r in ratios.items() for m in TINY_GROUPS[g]},
        round_to=round_to,
    )


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def batch() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(4, 1, 16, 16)


def test_empty_plan_leaves_outputs_exactly_equal(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor, batch: torch.Tensor
) -> None:
    before = _state(tiny_resnet)
    with torch.no_grad():
        expected = tiny_resnet(batch)
    for plan in (Plan(), Plan(layers={"stem.0": LayerConfig(keep_ratio=1.0)}), Plan(round_to=8)):
        compressed = apply(tiny_resnet, plan, tiny_input)
        assert compressed is not tiny_resnet
        with torch.no_grad():
            assert torch.equal(compressed(batch), expected)
        assert channel_counts(compressed) == channel_counts(tiny_resnet)
        assert _same_state(compressed.state_dict(), before)
    assert _same_state(tiny_resnet.state_dict(), before)


def test_pruned_model_is_smaller_with_the_same_output_shape(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor, batch: torch.Tensor
) -> None:
    plan = _group_plan(
        {"stem.0": 0.5, "layer1.conv1": 0.25, "layer2.conv1": 0.5, "layer2.conv2": 0.75}
    )
    pruned = apply(tiny_resnet, plan, tiny_input)
    assert param_count(pruned) < param_count(tiny_resnet)
    assert size_bytes(pruned) < size_bytes(tiny_resnet)
    with torch.no_grad():
        out = pruned(batch)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    counts = channel_counts(pruned)
    dense = channel_counts(tiny_resnet)
    for name, channels in dense.items():
        ratio = plan.config(name).keep_ratio
        assert counts[name] == (channels if ratio == 1.0 else kept_channels(channels, ratio))
    assert counts == {
        "stem.0": 8,
        "layer1.conv1": 4,
        "layer1.conv2": 8,
        "layer2.conv1": 16,
        "layer2.conv2": 24,
        "layer2.downsample.0": 24,
        "fc": 10,
    }
    modules = dict(pruned.named_modules())
    # consumers follow: the next layers' inputs and the BatchNorms shrink with their producers
    assert modules["layer1.conv1"].in_channels == 8
    assert modules["layer1.bn1"].num_features == 4
    assert modules["fc"].in_features == 24


def test_round_to_applies_to_pruned_channel_counts(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    plan = _group_plan({"layer2.conv1": 0.3, "layer2.conv2": 0.6}, round_to=8)
    counts = channel_counts(apply(tiny_resnet, plan, tiny_input))
    assert counts["layer2.conv1"] == kept_channels(32, 0.3, 8) == 8
    assert (
        counts["layer2.conv2"] == counts["layer2.downsample.0"] == kept_channels(32, 0.6, 8) == 16
    )


def test_pruning_keeps_the_mode_of_the_dense_model(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    plan = _group_plan({"layer1.conv1": 0.5})
    assert not apply(tiny_resnet, plan, tiny_input).training
    tiny_resnet.train()
    assert apply(tiny_resnet, plan, tiny_input).training


@pytest.mark.parametrize(
    ("channels", "keep_ratio", "round_to", "expected"),
    [
        (64, 0.3, 8, 16),
        (64, 0.3, None, 19),
        (64, 0.5, 8, 64 // 2),
        (64, 0.01, 8, 8),  # never below round_to
        (64, 0.01, None, 1),  # never zero
        (3, 0.1, None, 1),
        (4, 0.5, 8, 2),  # fewer channels than round_to: plain rounding
        (12, 0.99, 8, 12),  # rounding up never exceeds the channels
        (16, 1.0, 8, 16),
        (16, 0.5, 16, 16),  # exactly round_to channels: the only multiple, kept whole
        (24, 0.5, 16, 16),
        (10, 0.5, 1, 5),
    ],
)
def test_kept_channels(
    channels: int, keep_ratio: float, round_to: int | None, expected: int
) -> None:
    assert kept_channels(channels, keep_ratio, round_to) == expected


@pytest.mark.parametrize("channels", [1, 2, 7, 8, 9, 31, 64, 100])
@pytest.mark.parametrize("keep_ratio", [0.01, 0.25, 0.5, 0.875, 1.0])
@pytest.mark.parametrize("round_to", [None, 4, 8])
def test_kept_channels_is_between_one_and_channels(
    channels: int, keep_ratio: float, round_to: int | None
) -> None:
    kept = kept_channels(channels, keep_ratio, round_to)
    assert 1 <= kept <= channels
    if round_to and channels >= round_to and kept < channels:
        assert kept % round_to == 0


def test_apply_does_not_modify_the_dense_model(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    before, counts = _state(tiny_resnet), channel_counts(tiny_resnet)
    pruned = apply(tiny_resnet, _group_plan({"stem.0": 0.5}), tiny_input)
    assert pruned is not tiny_resnet
    assert channel_counts(pruned)["stem.0"] == 8
    assert channel_counts(tiny_resnet) == counts
    assert _same_state(tiny_resnet.state_dict(), before)


def test_apply_inplace_prunes_the_model_itself(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    pruned = apply(tiny_resnet, _group_plan({"stem.0": 0.5}), tiny_input, inplace=True)
    assert pruned is tiny_resnet
    assert channel_counts(tiny_resnet)["stem.0"] == 8


def test_apply_accepts_a_tuple_input(tiny_resnet: TinyResNet, tiny_input: torch.Tensor) -> None:
    pruned = apply(tiny_resnet, _group_plan({"layer1.conv1": 0.5}), (tiny_input,))
    assert channel_counts(pruned)["layer1.conv1"] == 8


def test_pruning_the_output_layer_is_an_error(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    with pytest.raises(PlanError, match=r"layer 'fc' produces the model's output"):
        apply(tiny_resnet, Plan(layers={"fc": LayerConfig(keep_ratio=0.5)}), tiny_input)


def test_a_missing_layer_is_an_error(tiny_resnet: TinyResNet, tiny_input: torch.Tensor) -> None:
    with pytest.raises(
        PlanError, match=r"plan names layer 'layer9\.conv1', which this model does not have"
    ):
        apply(tiny_resnet, Plan(layers={"layer9.conv1": LayerConfig(keep_ratio=0.5)}), tiny_input)


def test_a_layer_without_output_channels_is_an_error(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    with pytest.raises(PlanError, match=r"layer 'stem\.1' has no prunable output channels"):
        apply(tiny_resnet, Plan(layers={"stem.1": LayerConfig(keep_ratio=0.5)}), tiny_input)


def test_group_members_with_different_ratios_is_an_error(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    plan = Plan(
        layers={
            "layer2.conv2": LayerConfig(keep_ratio=0.5),
            "layer2.downsample.0": LayerConfig(keep_ratio=0.25),
        }
    )
    with pytest.raises(
        PlanError,
        match=r"layers layer2\.conv2, layer2\.downsample\.0 are pruned together .* "
        r"layer2\.conv2=0\.5, layer2\.downsample\.0=0\.25",
    ):
        apply(tiny_resnet, plan, tiny_input)


def test_group_member_left_out_of_the_plan_is_an_error(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    with pytest.raises(PlanError, match=r"pruned together"):
        apply(tiny_resnet, Plan(layers={"stem.0": LayerConfig(keep_ratio=0.5)}), tiny_input)


def test_errors_are_raised_before_the_model_is_touched(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    before = _state(tiny_resnet)
    with pytest.raises(PlanError):
        prune_channels(tiny_resnet, Plan(layers={"fc": LayerConfig(keep_ratio=0.5)}), (tiny_input,))
    assert _same_state(tiny_resnet.state_dict(), before)


def test_size_bytes_is_the_bytes_torch_save_writes(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor, tmp_path: Path
) -> None:
    pruned = apply(tiny_resnet, _group_plan({"stem.0": 0.5}), tiny_input)
    for i, model in enumerate((tiny_resnet, pruned)):
        path = tmp_path / f"model{i}.pt"
        with path.open("wb") as f:
            torch.save(model.state_dict(), f)
        assert size_bytes(model) == path.stat().st_size == len(path.read_bytes())


def test_a_plan_error_leaves_the_training_mode_as_it_was(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    tiny_resnet.train()
    with pytest.raises(PlanError):
        prune_channels(tiny_resnet, Plan(layers={"fc": LayerConfig(keep_ratio=0.5)}), (tiny_input,))
    assert tiny_resnet.training
