"""Depth pruning: which blocks can be dropped (residual ones, checked on the real input, and
layers of a stack), and dropping them."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.compress.depth import DroppedBlock, drop_blocks, droppable_blocks
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
    assert droppable_blocks(tiny_resnet, tiny_input) == ["layer1"]


def test_a_stage_of_residual_blocks_lists_its_blocks_not_itself() -> None:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Sequential(_Shortcut(), _Shortcut()))
    x = torch.randn(1, 1, 8, 8)
    assert droppable_blocks(model, x) == ["1.0", "1.1"]


def test_same_shape_blocks_without_a_shortcut_are_not_found() -> None:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), _PlainBlock(), _PlainBlock())
    assert droppable_blocks(model, torch.randn(1, 1, 8, 8)) == []


def test_relu_after_the_add_is_dropped_only_where_the_input_is_never_negative() -> None:
    class ReluBlock(_Shortcut):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.conv(x))

    signed = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), ReluBlock())
    after_relu = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), ReluBlock())
    x = torch.randn(1, 1, 8, 8)
    assert droppable_blocks(signed, x) == []
    assert droppable_blocks(after_relu, x) == ["2"]


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
    droppable_blocks(tiny_resnet, tiny_input)
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
    assert droppable_blocks(model, torch.randn(1, 1, 8, 8)) == []


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

    assert droppable_blocks(Caller(), torch.randn(1, 1, 8, 8)) == []


class _PostNormLayer(nn.Module):
    """A post-LayerNorm layer that takes a mask beside its input, like BERT's: no identity when
    zeroed (its norm's weight is zero too)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dense(x) * mask)


class _Stack(nn.Module):
    """An embedding-free encoder: a loop over its layers, then a head."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return self.head(x.mean(1))


def _stack_input() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 5, 16), torch.ones(2, 5, 1)


def test_the_layers_of_a_stack_are_blocks_though_no_identity_when_zeroed() -> None:
    model = _Stack([_PostNormLayer() for _ in range(3)])
    assert droppable_blocks(model, _stack_input()) == ["layer.0", "layer.1", "layer.2"]


def test_a_list_of_mixed_classes_of_one_entry_or_of_bare_layers_is_no_stack() -> None:
    class OtherLayer(_PostNormLayer):
        pass

    class Mlp(nn.Module):  # Linears in a list, ReLU between: layers, not blocks
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList([nn.Linear(16, 16) for _ in range(3)])

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            for layer in self.layer:
                x = torch.relu(layer(x)) * mask
            return x

    assert droppable_blocks(_Stack([_PostNormLayer(), OtherLayer()]), _stack_input()) == []
    assert droppable_blocks(_Stack([_PostNormLayer()]), _stack_input()) == []
    assert droppable_blocks(Mlp(), _stack_input()) == []


def test_a_stack_layer_that_changes_its_input_shape_is_not_a_block() -> None:
    class Widening(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.dense = nn.Linear(width, 16)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.dense(x) * mask

    class Stem(nn.Module):  # 8 -> 16, then 16 -> 16: only the second keeps its input's shape
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList([Widening(8), Widening(16)])

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            for layer in self.layer:
                x = layer(x, mask)
            return x

    assert droppable_blocks(Stem(), (torch.randn(2, 5, 8), torch.ones(2, 5, 1))) == ["layer.1"]


def test_a_dropped_stack_layer_passes_its_input_through_and_ignores_the_mask() -> None:
    model = _Stack([_PostNormLayer() for _ in range(3)]).eval()
    x, mask = _stack_input()
    expected = model.head(model.layer[2](model.layer[0](x, mask), mask).mean(1))
    drop_blocks(model, ["layer.1"])
    assert isinstance(model.layer[1], DroppedBlock)
    assert torch.equal(model(x, mask), expected)


def test_a_bert_encoder_s_layers_are_blocks_and_their_attention_cores_leave_with_them() -> None:
    """transformers' BERT: each encoder layer is droppable, the space decides each once, and
    the latency model drops the layer's Linears and its attention core."""
    import pytest

    pytest.importorskip("transformers")
    from autocompress.compress.apply import apply
    from autocompress.latency.shapes import ModelShapes
    from autocompress.space.discover import discover
    from autocompress.space.spec import load_space
    from tests.transformer_factories import tiny_bert, tokens

    model, inputs = tiny_bert(), tokens()
    prefix = "encoder.encoder.layer"
    assert droppable_blocks(model, inputs) == [f"{prefix}.0", f"{prefix}.1"]
    layers = discover(model, inputs)
    first = [x.name for x in layers if x.block == f"{prefix}.0"]
    assert len(first) == 6  # query, key, value, attention output, FFN in and out
    knobs = [k for k in load_space("runtime").knobs(layers) if k.setting == "drop_block"]
    assert [k.layers for k in knobs] == [
        tuple(first),
        tuple(n for n in (x.name for x in layers) if n.startswith(f"{prefix}.1.")),
    ]

    plan = Plan(layers={n: LayerConfig(drop_block=True) for n in first})
    built = apply(model, plan, inputs)
    assert isinstance(built.encoder.encoder.layer[0], DroppedBlock)
    with torch.no_grad():
        out = built(*inputs)
    assert out.shape == model(*inputs).shape

    shapes = ModelShapes.from_model(model, inputs, layers)
    core = shapes.attention[0].geometry_json()
    dense, dropped = shapes.kernels(Plan()), shapes.kernels(plan)
    assert [k.geometry == core for k in dense].count(True) == 2
    assert [k.geometry == core for k in dropped].count(True) == 1
    assert len(dense) - len(dropped) == 6 + 1  # its six Linears and its attention core
