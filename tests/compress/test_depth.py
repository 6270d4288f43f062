"""Depth pruning: which blocks are residual (checked on the real input), and dropping them."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.compress.depth import DroppedBlock, drop_blocks, residual_blocks
from autocompress.config import LayerConfig, Plan
from tests.conftest import TinyResNet


class _PlainBlock(nn.Module):
    """conv + ReLU without a shortcut: same shape in and out, but not residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class _Shortcut(nn.Module):
    """x + conv(x) with no activation after: residual whatever the sign of x."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def test_only_identity_shortcut_blocks_are_found(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    # layer2 widens 16 -> 32 through a strided 1x1 projection: dropping it would change shapes.
    assert residual_blocks(tiny_resnet, tiny_input) == ["layer1"]


def test_a_stage_of_residual_blocks_lists_its_blocks_not_itself() -> None:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Sequential(_Shortcut(), _Shortcut()))
    x = torch.randn(1, 1, 8, 8)
    assert residual_blocks(model, x) == ["1.0", "1.1"]


def test_same_shape_blocks_without_a_shortcut_are_not_found() -> None:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), _PlainBlock(), _PlainBlock())
    assert residual_blocks(model, torch.randn(1, 1, 8, 8)) == []


def test_relu_after_the_add_is_dropped_only_where_the_input_is_never_negative() -> None:
    class ReluBlock(_Shortcut):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.conv(x))

    signed = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), ReluBlock())
    after_relu = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), ReluBlock())
    x = torch.randn(1, 1, 8, 8)
    assert residual_blocks(signed, x) == []
    assert residual_blocks(after_relu, x) == ["2"]


def test_dropping_a_block_removes_its_layers_and_keeps_the_output_shape(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    expected = tiny_resnet.fc(
        torch.flatten(tiny_resnet.pool(tiny_resnet.layer2(tiny_resnet.stem(tiny_input))), 1)
    )
    drop_blocks(tiny_resnet, ["layer1"])
    assert isinstance(tiny_resnet.layer1, DroppedBlock)
    assert not any(n.startswith("layer1.") for n, _ in tiny_resnet.named_modules())
    out = tiny_resnet(tiny_input)
    assert out.shape == (1, 10) and torch.equal(out, expected)


def test_finding_blocks_leaves_the_model_and_its_mode_unchanged(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    tiny_resnet.train()
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    residual_blocks(tiny_resnet, tiny_input)
    assert tiny_resnet.training
    after = tiny_resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_space_offers_one_drop_decision_per_block_covering_its_layers(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    from autocompress.space.discover import discover
    from autocompress.space.spec import load_space

    layers = discover(tiny_resnet, (tiny_input,))
    assert {x.name: x.block for x in layers if x.block} == {
        "layer1.conv1": "layer1",
        "layer1.conv2": "layer1",
    }
    knobs = [k for k in load_space("runtime").knobs(layers) if k.setting == "drop_block"]
    assert [(k.param, k.layers, k.choices) for k in knobs] == [
        ("drop_block:layer1", ("layer1.conv1", "layer1.conv2"), (False, True))
    ]


def test_a_plan_drops_a_block_only_when_it_drops_every_layer_of_it(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    from autocompress.compress.apply import apply

    half = Plan(layers={"layer1.conv1": LayerConfig(drop_block=True)})
    assert isinstance(apply(tiny_resnet, half, tiny_input).layer1, type(tiny_resnet.layer1))
    whole = {n: LayerConfig(drop_block=True) for n in ("layer1.conv1", "layer1.conv2")}
    assert isinstance(apply(tiny_resnet, Plan(layers=whole), tiny_input).layer1, DroppedBlock)


def test_dropped_layers_leave_the_later_stages_the_size_and_the_latency_model(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    """Pruned and int8 everywhere, block dropped: the later stages skip the dropped layers,
    the size counts none of their weights and the latency model times none of their kernels."""
    from autocompress.compress.apply import apply, bake, deploy
    from autocompress.compress.size import compressed_size_bytes
    from autocompress.latency.shapes import ModelShapes
    from autocompress.space.discover import discover

    everywhere = dict(keep_ratio=0.5, weight_bits=8, act_bits=8)
    layers = {n: dict(everywhere) for n in ("stem.0", "layer1.conv1", "layer1.conv2")}
    layers["layer1.conv1"].pop("keep_ratio")  # its own group, left whole
    kept = Plan(layers={n: LayerConfig(**c) for n, c in layers.items()})
    dropped = Plan(
        layers={n: LayerConfig(**c, drop_block=n.startswith("layer1.")) for n, c in layers.items()}
    )
    built = apply(tiny_resnet, dropped, tiny_input)
    assert isinstance(built.layer1, DroppedBlock)
    assert built.stem[0].inner.out_channels == 8  # the stage after the drop pruned stem.0
    out = deploy(built, dropped, tiny_input, [(tiny_input,)], compile=False)(tiny_input)
    assert out.shape == (1, 10)

    other = apply(tiny_resnet, kept, tiny_input)
    gone = sum(p.numel() for p in other.layer1.parameters())
    assert compressed_size_bytes(bake(built), dropped) < compressed_size_bytes(bake(other), kept)
    assert gone > 0

    shapes = ModelShapes.from_model(
        tiny_resnet, (tiny_input,), discover(tiny_resnet, (tiny_input,))
    )
    assert len(shapes.kernels(dropped)) == len(shapes.kernels(kept)) - 2


def test_a_block_that_changes_its_input_in_place_is_judged_on_the_input_it_was_given() -> None:
    class InPlace(_Shortcut):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu_(x)  # clobbers the caller's tensor: relu(x) + f(x) is not x + f(x)
            return x + self.conv(x)

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), InPlace())
    assert residual_blocks(model, torch.randn(1, 1, 8, 8)) == []


def test_a_module_that_cannot_run_on_its_input_alone_is_not_a_block() -> None:
    class NeedsMask(_Shortcut):
        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            if mask is None:
                raise ValueError("called without its mask")
            return x + self.conv(x) * mask

    class Caller(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.block = nn.Conv2d(1, 16, 3, padding=1), NeedsMask()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.stem(x), mask=torch.ones(1))

    assert residual_blocks(Caller(), torch.randn(1, 1, 8, 8)) == []
