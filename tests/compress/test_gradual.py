"""Gradual pruning: masks that grow along the cubic schedule during the fine-tune, a model as
applied that equals the one-shot pruned one, and a bake that removes the masked channels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.compress.apply import apply, bake, deploy
from autocompress.compress.coupling import features
from autocompress.compress.gradual import UPDATES, ChannelRamp, cubic_removed
from autocompress.compress.method import schedules
from autocompress.compress.prune import channel_counts
from autocompress.config import LayerConfig, Plan
from autocompress.errors import PlanError
from autocompress.evaluate.finetune import finetune
from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from tests.conftest import TINY_GROUPS, TinyResNet, make_tiny_resnet


def _plan(keep: float, ramp: float, groups: tuple[str, ...] = tuple(TINY_GROUPS)) -> Plan:
    return Plan(
        layers={
            m: LayerConfig(keep_ratio=keep, prune_ramp=ramp) for g in groups for m in TINY_GROUPS[g]
        }
    )


def _task() -> Task:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 16, 16, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return Task("synthetic", loader, loader, x[:1], top1, "top1")


def test_cubic_schedule_rises_fast_then_slowly_and_reaches_the_total() -> None:
    counts = [cubic_removed(step, 80, 40) for step in range(0, 81)]
    assert counts[0] == 0 and counts[80] == 40 and cubic_removed(500, 80, 40) == 40
    assert counts == sorted(counts)  # masked channels never come back
    changes = {step for step in range(1, 81) if counts[step] != counts[step - 1]}
    assert changes <= set(range(80 // UPDATES, 81, 80 // UPDATES))  # 8 updates, at most
    # cubic: half the ramp removes 7/8 of the channels
    assert counts[40] == 35


def test_as_applied_it_is_the_one_shot_pruned_model(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    # one group: the same channels masked as one-shot pruning removes
    gradual = apply(tiny_resnet, _plan(0.5, 0.5, ("layer2.conv2",)), tiny_input)
    one_shot = apply(tiny_resnet, _plan(0.5, 0.0, ("layer2.conv2",)), tiny_input)
    assert channel_counts(gradual) == channel_counts(tiny_resnet)  # nothing removed yet
    torch.testing.assert_close(gradual(tiny_input), one_shot(tiny_input))
    baked = bake(gradual)
    assert channel_counts(baked) == channel_counts(one_shot)
    torch.testing.assert_close(baked(tiny_input), one_shot(tiny_input))
    # the applied model keeps its mask and its schedule (bake worked on a copy)
    assert len(schedules(gradual)) == 1 and not schedules(baked)
    torch.testing.assert_close(gradual(tiny_input), one_shot(tiny_input))


def test_every_group_masked_bakes_to_the_one_shot_widths_and_the_same_outputs(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    # Several groups: one-shot ranks each group on the model the groups before it left, so
    # the channels chosen may differ; the widths may not, and removing is exactly masking.
    gradual = apply(tiny_resnet, _plan(0.5, 0.5), tiny_input)
    baked = bake(gradual)
    assert len(schedules(gradual)) == 4
    assert channel_counts(baked) == channel_counts(apply(tiny_resnet, _plan(0.5, 0.0), tiny_input))
    torch.testing.assert_close(baked(tiny_input), gradual(tiny_input))


def test_the_fine_tune_ramps_the_masks_and_ends_at_the_plans_widths(
    tiny_input: torch.Tensor,
) -> None:
    dense = make_tiny_resnet()
    model = apply(dense, _plan(0.5, 0.5, ("layer1.conv1",)), tiny_input)
    (ramp,) = schedules(model)
    assert isinstance(ramp, ChannelRamp) and ramp.masked() == 8  # as applied: final
    seen: list[int] = []
    finetune(model, dense, _task(), steps=16, on_step=lambda step, loss: seen.append(ramp.masked()))
    assert seen[0] < 8 and seen[7] == 8 and seen == sorted(seen)  # ramp: half of 16 steps
    assert ramp.masked() == 8
    baked = bake(model)
    assert features(baked.layer1.conv1)[1] == 8 and baked.layer1.bn1.num_features == 8
    model.eval()
    torch.testing.assert_close(baked(tiny_input), model(tiny_input), atol=1e-5, rtol=1e-4)


def test_zero_fine_tune_steps_leave_the_one_shot_masks(tiny_input: torch.Tensor) -> None:
    dense = make_tiny_resnet()
    model = apply(dense, _plan(0.5, 0.75), tiny_input)
    finetune(model, dense, _task(), steps=0)
    assert all(s.masked() == s.ramp.remove for s in schedules(model))


def test_masked_channels_stay_zero_through_int8_fake_quant_and_deploy(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    pruned = TINY_GROUPS["layer2.conv2"]  # one group: one-shot removes the channels it masks
    plan = Plan(
        layers={
            name: LayerConfig(
                keep_ratio=0.5 if name in pruned else 1.0,
                prune_ramp=0.5 if name in pruned else 0.0,
                weight_bits=8,
                act_bits=8,
            )
            for name in [*(m for g in TINY_GROUPS.values() for m in g), "fc"]
        }
    )
    model = apply(tiny_resnet, plan, tiny_input)
    deployed = deploy(model, plan, tiny_input, [(tiny_input,)], compile=False)
    one_shot = Plan(layers={n: c.replace(prune_ramp=0.0) for n, c in plan.layers.items()})
    reference = deploy(apply(tiny_resnet, one_shot, tiny_input), one_shot, tiny_input,
                       [(tiny_input,)], compile=False)  # fmt: skip
    torch.testing.assert_close(deployed(tiny_input), reference(tiny_input))


def test_a_copy_of_the_model_bakes_but_cannot_ramp(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    model = apply(tiny_resnet, _plan(0.5, 0.5), tiny_input)
    twin = copy.deepcopy(model)
    (ramp, *_) = schedules(twin)
    ramp.begin(10)
    with pytest.raises(RuntimeError, match="cannot be fine-tuned"):
        ramp.advance(10)
    # the original is untouched by its copy's mask
    assert all(s.masked() == s.ramp.remove for s in schedules(model))


def test_a_ramp_is_not_taken_with_a_low_rank_split_or_sharing() -> None:
    with pytest.raises(PlanError, match="prune_ramp needs rank_ratio 1"):
        LayerConfig(keep_ratio=0.5, prune_ramp=0.5, rank_ratio=0.5)
    with pytest.raises(PlanError, match="prune_ramp needs"):
        LayerConfig(keep_ratio=0.5, prune_ramp=0.5, share_values=16)
    with pytest.raises(PlanError, match=r"prune_ramp must be in \[0, 1\)"):
        LayerConfig(prune_ramp=1.0)


def test_a_group_whose_layers_disagree_on_the_ramp_is_pruned_at_once_with_a_note(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    from autocompress.compress.apply import plan_notes

    plan = Plan(
        layers={
            "stem.0": LayerConfig(keep_ratio=0.5, prune_ramp=0.5),
            "layer1.conv2": LayerConfig(keep_ratio=0.5, prune_ramp=0.75),
        }
    )
    with plan_notes() as notes:
        model = apply(tiny_resnet, plan, tiny_input)
    assert notes == [
        "group 'stem.0' pruned at once, not gradually: its layers disagree on prune_ramp"
    ]
    assert not schedules(model) and features(model.stem[0])[1] == 8


def test_a_group_read_by_a_factorized_layer_is_pruned_at_once(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    from autocompress.compress.apply import plan_notes

    plan = Plan(
        layers={
            "layer2.conv1": LayerConfig(keep_ratio=0.5, prune_ramp=0.5),
            "layer2.conv2": LayerConfig(rank_ratio=0.25),
        }
    )
    with plan_notes() as notes:
        model = apply(tiny_resnet, plan, tiny_input)
    assert notes == [
        "group 'layer2.conv1' pruned at once, not gradually: a layer that reads its channels "
        "is factorized"
    ]
    assert not schedules(model) and features(model.layer2.conv1)[1] == 16


def test_a_group_a_mask_cannot_zero_exactly_is_pruned_at_once_with_a_note() -> None:
    from autocompress.compress.apply import plan_notes

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)).eval()
    x = torch.randn(4, 8)
    with plan_notes() as notes:
        model = apply(dense, Plan(layers={"0": LayerConfig(keep_ratio=0.5, prune_ramp=0.5)}), x)
    assert notes == ["group '0' pruned at once, not gradually: its channels reach a LayerNorm"]
    assert not schedules(model) and model[0].out_features == 8


def test_a_ramp_without_pruning_does_nothing(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    model = apply(
        tiny_resnet, Plan(layers={"layer1.conv1": LayerConfig(prune_ramp=0.5)}), tiny_input
    )
    assert not schedules(model)
    torch.testing.assert_close(model(tiny_input), tiny_resnet(tiny_input))


def test_plain_linear_groups_ramp_too() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(4, 8)
    plan = Plan(layers={"0": LayerConfig(keep_ratio=0.25, prune_ramp=0.5)})
    model = apply(dense, plan, x)
    one_shot = apply(dense, Plan(layers={"0": LayerConfig(keep_ratio=0.25)}), x)
    torch.testing.assert_close(model(x), one_shot(x))
    assert bake(model)[0].out_features == 8
