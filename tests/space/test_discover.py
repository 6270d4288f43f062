"""Layer discovery: every conv/linear in module order, residual coupling, the unprunable output."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.space.discover import discover
from tests.conftest import SAME_PAD_LAYERS, TINY_GROUPS, TinyResNet, make_same_pad_net


def test_lists_every_conv_and_linear_in_module_order(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    layers = discover(tiny_resnet, (tiny_input,))
    expected = [
        name for name, m in tiny_resnet.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    assert [layer.name for layer in layers] == expected
    assert expected == [
        "stem.0",
        "layer1.conv1",
        "layer1.conv2",
        "layer2.conv1",
        "layer2.conv2",
        "layer2.downsample.0",
        "fc",
    ]
    assert [layer.type for layer in layers] == ["Conv2d"] * 6 + ["Linear"]


def test_reports_shapes_and_parameter_counts(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    by_name = {layer.name: layer for layer in discover(tiny_resnet, (tiny_input,))}
    modules = dict(tiny_resnet.named_modules())
    for name, layer in by_name.items():
        module = modules[name]
        assert layer.params == sum(p.numel() for p in module.parameters(recurse=False))
    assert (by_name["stem.0"].in_features, by_name["stem.0"].out_features) == (1, 16)
    assert (
        by_name["layer2.downsample.0"].in_features,
        by_name["layer2.downsample.0"].out_features,
    ) == (16, 32)
    assert (by_name["fc"].in_features, by_name["fc"].out_features, by_name["fc"].params) == (
        32,
        10,
        330,
    )


def test_residual_coupled_convs_share_a_group(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    layers = discover(tiny_resnet, (tiny_input,))
    groups: dict[str | None, list[str]] = {}
    for layer in layers:
        groups.setdefault(layer.group, []).append(layer.name)
    assert groups.pop(None) == ["fc"]
    assert groups == TINY_GROUPS


def test_output_linear_is_not_prunable(tiny_resnet: TinyResNet, tiny_input: torch.Tensor) -> None:
    by_name = {layer.name: layer for layer in discover(tiny_resnet, (tiny_input,))}
    assert by_name["fc"].group is None
    assert not by_name["fc"].prunable
    assert all(layer.prunable for name, layer in by_name.items() if name != "fc")


def test_a_hidden_linear_is_prunable_and_the_last_is_not() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    layers = discover(mlp, (torch.randn(2, 8),))
    assert [(layer.name, layer.group) for layer in layers] == [("0", "0"), ("2", "2"), ("4", None)]


def test_leaves_the_model_mode_and_weights_alone(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    tiny_resnet.train()
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    discover(tiny_resnet, (tiny_input,))
    assert tiny_resnet.training
    after = tiny_resnet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_subclasses_of_the_torch_layers_are_discovered_as_what_they_are() -> None:
    # Ported models subclass nn.Conv2d / nn.Linear (padding in forward): still layers.
    model = make_same_pad_net()
    layers = discover(model, (torch.randn(1, 1, 16, 16),))
    assert [layer.name for layer in layers] == SAME_PAD_LAYERS
    assert [layer.type for layer in layers] == ["Conv2d"] * 4 + ["Linear"] * 2
    groups = {layer.name: layer.group for layer in layers}
    # the depthwise conv is pruned with the stem that feeds it; the output layer is not pruned
    assert groups["dw.0"] == groups["stem.0"] == "stem.0"
    assert groups["fc"] is None and groups["down.0"] == "down.0"
