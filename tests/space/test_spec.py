"""YAML search spaces: the packaged default, strict parsing, rules, and per-group knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from autocompress.config import LayerConfig
from autocompress.errors import SpaceError
from autocompress.space.discover import LayerInfo, discover
from autocompress.space.spec import Knob, load_space, packaged_spaces, parse_space
from tests.conftest import SAME_PAD_LAYERS, TINY_GROUPS, TinyResNet, make_same_pad_net


def _space(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"version": 1, "defaults": {"keep_ratio": [1.0, 0.5]}}
    data.update(overrides)
    return data


def _layer(name: str, type_: str = "Conv2d", group: str | None = "auto") -> LayerInfo:
    return LayerInfo(name, type_, 4, 8, 32, name if group == "auto" else group)


@pytest.fixture
def tiny_layers(tiny_resnet: TinyResNet, tiny_input: torch.Tensor) -> list[LayerInfo]:
    return discover(tiny_resnet, (tiny_input,))


def test_default_space_loads_with_keep_ratio_choices() -> None:
    assert "default" in packaged_spaces()
    space = load_space("default")
    choices = space.defaults["keep_ratio"]
    assert len(choices) > 1
    assert 1.0 in choices
    assert all(0.0 < c <= 1.0 for c in choices)
    assert space.source == "default.yaml"
    assert load_space() == space


def test_default_space_resolves_on_the_tiny_resnet(tiny_layers: list[LayerInfo]) -> None:
    space = load_space("default")
    knobs = space.knobs(tiny_layers)
    assert {s for k in knobs for s in [k.setting]} == set(LayerConfig().values)
    pruning = [k for k in knobs if k.setting == "keep_ratio"]
    assert {k.param: list(k.layers) for k in pruning} == {
        f"keep_ratio:{group}": members for group, members in TINY_GROUPS.items()
    }
    assert all(k.choices == space.defaults["keep_ratio"] for k in pruning)
    # The classifier keeps full rank and no sparsity: its knobs offer nothing else.
    fc = {k.setting: k.choices for k in knobs if k.layers == ("fc",)}
    assert fc == {
        "sparsity_pattern": ("unstructured", "2:4"),
        "weight_bits": (32, 8),
        "act_bits": (32, 8),
    }
    pruned = space.knobs(tiny_layers, methods=["prune"])
    assert {k.setting for k in pruned} == {"keep_ratio", "prune_ramp"}
    ramps = [k for k in pruned if k.setting == "prune_ramp"]  # decided with the keep ratio
    assert {k.param: list(k.layers) for k in ramps} == {
        f"prune_ramp:{group}": members for group, members in TINY_GROUPS.items()
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_space(bits=[8]), r"unknown key 'bits'; top-level keys are"),
        (_space(version=2), r"version must be 1, got 2"),
        ({"defaults": {"keep_ratio": [0.5]}}, r"version must be 1, got None"),
        (_space(defaults=[0.5, 1.0]), r"defaults must be a mapping"),
        (
            _space(defaults={"keep_ratios": [0.5]}),
            r"defaults: unknown key 'keep_ratios'; knobs are: drop_block, keep_ratio, prune_ramp,",
        ),
        (_space(defaults={"keep_ratio": []}), r"defaults\.keep_ratio: expected a non-empty list"),
        (_space(defaults={"keep_ratio": 0.5}), r"defaults\.keep_ratio: expected a non-empty list"),
        (_space(defaults={"keep_ratio": [1.0, 1.5]}), r"defaults\.keep_ratio: bad choice 1\.5"),
        (_space(defaults={"keep_ratio": [0.0]}), r"defaults\.keep_ratio: bad choice 0\.0"),
        (_space(defaults={"keep_ratio": ["half"]}), r"defaults\.keep_ratio: bad choice 'half'"),
        (_space(round_to=0), r"round_to must be a positive integer"),
        (_space(round_to=True), r"round_to must be a positive integer"),
        (_space(rules={"match": {"type": "Linear"}}), r"rules must be a list"),
        (_space(rules=[{"keep_ratio": [1.0]}]), r"rules\[0\]\.match: expected a mapping"),
        (
            _space(rules=[{"match": {}, "keep_ratio": [1.0]}]),
            r"rules\[0\]\.match: expected a mapping",
        ),
        (
            _space(rules=[{"match": {"kind": "Linear"}, "keep_ratio": [1.0]}]),
            r"rules\[0\]\.match: unknown key 'kind'",
        ),
        (
            _space(rules=[{"match": {"type": 3}, "keep_ratio": [1.0]}]),
            r"rules\[0\]\.match\.type: expected a class name",
        ),
        (
            _space(rules=[{"match": {"type": "SameConv2d"}, "keep_ratio": [1.0]}]),
            r"rules\[0\]\.match\.type: 'SameConv2d' is not a layer type; use one of Conv1d, "
            r"Conv2d, Linear, LSTM, Embedding \(a subclass",
        ),
        (
            _space(rules=[{"match": {"name": 3}, "keep_ratio": [1.0]}]),
            r"rules\[0\]\.match\.name: expected a string pattern",
        ),
        (_space(rules=[{"match": {"type": "Linear"}}]), r"rules\[0\]: sets no knob"),
        (
            _space(rules=[{"match": {"type": "Linear"}, "keep": [1.0]}]),
            r"rules\[0\]: unknown key 'keep'",
        ),
        (
            _space(rules=[{"match": {"type": "Linear"}, "keep_ratio": [2]}]),
            r"rules\[0\]\.keep_ratio: bad choice 2",
        ),
        (["version", 1], r"expected a mapping with 'version'"),
    ],
)
def test_parse_space_errors_name_the_key(data: Any, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        parse_space(data, source="my.yaml")
    with pytest.raises(SpaceError, match=r"^my\.yaml: "):
        parse_space(data, source="my.yaml")


def test_name_rule_matching_no_layer_is_an_error_at_resolution(
    tiny_layers: list[LayerInfo],
) -> None:
    space = parse_space(
        _space(rules=[{"match": {"name": "layer9.*"}, "keep_ratio": [1.0]}]), source="my.yaml"
    )
    with pytest.raises(
        SpaceError, match=r"my\.yaml: rule with name 'layer9\.\*' matches no layer.*stem\.0"
    ):
        space.knobs(tiny_layers)


def test_rules_override_defaults_in_order() -> None:
    space = parse_space(
        _space(
            defaults={"keep_ratio": [1.0, 0.75, 0.5, 0.25]},
            rules=[
                {"match": {"name": "layer*"}, "keep_ratio": [1.0, 0.5]},
                {"match": {"name": "layer2.*"}, "keep_ratio": [0.75]},
            ],
        )
    )
    assert space.choices_for(_layer("stem.0")) == {"keep_ratio": (1.0, 0.75, 0.5, 0.25)}
    assert space.choices_for(_layer("layer1.conv1")) == {"keep_ratio": (1.0, 0.5)}
    assert space.choices_for(_layer("layer2.conv1")) == {"keep_ratio": (0.75,)}


def test_type_rule_restricts_linear_only() -> None:
    space = parse_space(_space(rules=[{"match": {"type": "Linear"}, "keep_ratio": [1.0]}]))
    assert space.rules[0].types == ("Linear",)
    assert space.choices_for(_layer("fc", "Linear")) == {"keep_ratio": (1.0,)}
    assert space.choices_for(_layer("conv", "Conv2d")) == {"keep_ratio": (1.0, 0.5)}
    layers = [_layer("conv"), _layer("hidden", "Linear"), _layer("fc", "Linear", None)]
    assert [k.layers for k in space.knobs(layers)] == [("conv",)]


def test_type_rule_accepts_a_list_and_combines_with_name() -> None:
    space = parse_space(
        _space(rules=[{"match": {"type": ["Conv1d", "Conv2d"], "name": "b*"}, "keep_ratio": [0.5]}])
    )
    assert space.choices_for(_layer("a")) == {"keep_ratio": (1.0, 0.5)}
    assert space.choices_for(_layer("b")) == {"keep_ratio": (0.5,)}
    assert space.choices_for(_layer("b", "Linear")) == {"keep_ratio": (1.0, 0.5)}


def test_duplicate_choices_are_dropped_keeping_order() -> None:
    space = parse_space(_space(defaults={"keep_ratio": [0.5, 1.0, 0.5, 1]}))
    assert space.defaults["keep_ratio"] == (0.5, 1.0)


def test_knobs_one_per_group_with_the_intersection_of_choices(
    tiny_layers: list[LayerInfo],
) -> None:
    space = parse_space(
        _space(
            defaults={"keep_ratio": [1.0, 0.75, 0.5, 0.25]},
            rules=[
                # stem.0 and layer1.conv2 share a group: their choices intersect to (1.0, 0.5).
                {"match": {"name": "stem.*"}, "keep_ratio": [1.0, 0.5, 0.3]},
                {"match": {"name": "layer1.conv2"}, "keep_ratio": [0.5, 1.0, 0.25]},
            ],
        )
    )
    knobs = {k.param: k for k in space.knobs(tiny_layers)}
    assert list(knobs) == [f"keep_ratio:{g}" for g in TINY_GROUPS]
    assert knobs["keep_ratio:stem.0"] == Knob(
        "keep_ratio:stem.0", "keep_ratio", (1.0, 0.5), ("stem.0", "layer1.conv2")
    )
    assert knobs["keep_ratio:layer2.conv2"].layers == ("layer2.conv2", "layer2.downsample.0")
    assert knobs["keep_ratio:layer2.conv2"].choices == (1.0, 0.75, 0.5, 0.25)
    assert all(k.setting == "keep_ratio" for k in knobs.values())


def test_single_choice_groups_are_fixed_knobs_unless_left_as_is(
    tiny_layers: list[LayerInfo],
) -> None:
    space = parse_space(
        _space(
            rules=[
                {"match": {"name": "layer2.*"}, "keep_ratio": [1.0]},
                # one member fixed at 0.5 leaves its group a single shared choice
                {"match": {"name": "layer1.conv2"}, "keep_ratio": [0.5]},
            ]
        )
    )
    knobs = {k.param: k for k in space.knobs(tiny_layers)}
    # layer2's groups stay as they are (not knobs); stem.0's group is always pruned to 0.5.
    assert list(knobs) == ["keep_ratio:stem.0", "keep_ratio:layer1.conv1"]
    assert knobs["keep_ratio:stem.0"].choices == (0.5,)


def test_group_without_a_shared_choice_is_an_error(tiny_layers: list[LayerInfo]) -> None:
    space = parse_space(
        _space(rules=[{"match": {"name": "layer1.conv2"}, "keep_ratio": [0.25]}]), source="s.yaml"
    )
    with pytest.raises(
        SpaceError, match=r"s\.yaml: layers stem\.0, layer1\.conv2 must be pruned together"
    ):
        space.knobs(tiny_layers)


def test_yaml_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\nround_to: 8\ndefaults:\n  keep_ratio: [1.0, 0.5]\n"
        "rules:\n  - match: {type: Linear}\n    keep_ratio: [1.0]\n"
    )
    space = load_space(path)
    assert space.round_to == 8
    assert space.defaults == {"keep_ratio": (1.0, 0.5)}
    assert space.source == "mine.yaml"
    assert load_space(str(path)) == space


def test_yaml_syntax_error_is_a_space_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\ndefaults: {keep_ratio: [1.0, 0.5\n")
    with pytest.raises(SpaceError, match=r"broken\.yaml: not valid YAML"):
        load_space(path)


def test_malformed_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("version: 2\n")
    with pytest.raises(SpaceError, match=r"old\.yaml: version must be 1"):
        load_space(path)


def test_missing_file_lists_packaged_spaces(tmp_path: Path) -> None:
    with pytest.raises(
        SpaceError, match=r"'nope' not found; give a YAML file or one of: .*default"
    ):
        load_space("nope")
    with pytest.raises(SpaceError, match=r"not found.*default"):
        load_space(tmp_path / "absent.yaml")


def test_every_knob_is_searched_per_layer_and_methods_filter_them(
    tiny_resnet: torch.nn.Module, tiny_input: torch.Tensor
) -> None:
    space = parse_space(
        {
            "version": 1,
            "defaults": {
                "keep_ratio": [1.0, 0.5],
                "rank_ratio": [1.0, 0.25],
                "weight_bits": [32, 8],
                "act_bits": [32, 8],
            },
        }
    )
    layers = discover(tiny_resnet, (tiny_input,))
    settings = {k.setting for k in space.knobs(layers)}
    assert settings == {"keep_ratio", "rank_ratio", "weight_bits", "act_bits"}
    assert all(len(k.layers) == 1 for k in space.knobs(layers) if k.setting != "keep_ratio")
    quant_only = space.knobs(layers, methods=["quant"])
    assert {k.setting for k in quant_only} == {"weight_bits", "act_bits"}
    with pytest.raises(SpaceError, match="unknown method 'teleport'"):
        space.knobs(layers, methods=["teleport"])


def test_act_bits_8_is_a_valid_choice_in_a_space() -> None:
    space = parse_space({"version": 1, "defaults": {"act_bits": [32, 8]}})
    assert space.defaults["act_bits"] == (32, 8)


def test_tied_rule_makes_one_decision_for_every_matched_layer(
    tiny_layers: list[LayerInfo],
) -> None:
    space = parse_space(
        {
            "version": 1,
            "rules": [
                {"match": {"type": "Conv2d"}, "weight_bits": [32, 8], "tie": True},
                {"match": {"name": "layer2.*"}, "keep_ratio": [1.0, 0.5], "tie": True},
            ],
        }
    )
    knobs = {k.param: k for k in space.knobs(tiny_layers)}
    assert set(knobs) == {"weight_bits:rule0", "keep_ratio:rule1"}
    convs = [layer.name for layer in tiny_layers if layer.type == "Conv2d"]
    assert sorted(knobs["weight_bits:rule0"].layers) == sorted(convs)
    assert set(knobs["keep_ratio:rule1"].layers) == {
        "layer2.conv1", "layer2.conv2", "layer2.downsample.0",
    }  # fmt: skip


def test_tie_must_be_a_boolean() -> None:
    with pytest.raises(SpaceError, match=r"rules\[0\]\.tie: expected true or false"):
        parse_space(
            {
                "version": 1,
                "rules": [{"match": {"type": "Linear"}, "tie": "yes", "rank_ratio": [1.0]}],
            }
        )


def test_type_rules_match_subclasses_of_the_torch_layers() -> None:
    model = make_same_pad_net()
    layers = discover(model, (torch.randn(1, 1, 16, 16),))
    space = parse_space(
        _space(
            defaults={"keep_ratio": [1.0, 0.5], "weight_bits": [32, 8]},
            rules=[
                {"match": {"type": "Conv2d"}, "weight_bits": [8]},
                {"match": {"type": "Linear"}, "keep_ratio": [1.0]},
            ],
        )
    )
    choices = {layer.name: space.choices_for(layer) for layer in layers}
    assert list(choices) == SAME_PAD_LAYERS
    for name in SAME_PAD_LAYERS[:4]:  # every SameConv2d is a Conv2d to the rules
        assert choices[name] == {"keep_ratio": (1.0, 0.5), "weight_bits": (8,)}, name
    for name in SAME_PAD_LAYERS[4:]:  # every OwnLinear a Linear
        assert choices[name] == {"keep_ratio": (1.0,), "weight_bits": (32, 8)}, name
    knobs = {knob.param for knob in space.knobs(layers)}
    assert {f"weight_bits:{name}" for name in SAME_PAD_LAYERS} <= knobs


def test_with_the_model_a_layer_offers_only_the_levels_it_can_take(
    tiny_resnet: TinyResNet, tiny_layers: list[LayerInfo]
) -> None:
    space = parse_space(
        _space(
            defaults={
                "rank_ratio": [1.0, 0.5, 0.25],
                "sparsity": [0.0, 0.5],
                "sparsity_pattern": ["unstructured", "2:4"],
            }
        )
    )
    blind = {k.param: k.choices for k in space.knobs(tiny_layers, methods=["lowrank", "sparse"])}
    fitted = {
        k.param: k.choices
        for k in space.knobs(tiny_layers, methods=["lowrank", "sparse"], model=tiny_resnet)
    }
    # The stem sees 1 input channel: 9 weights per output, no 2:4 groups; half the rank of
    # a 16x16 3x3 conv keeps as many weights as it has, a quarter saves some.
    assert blind["sparsity_pattern:stem.0"] == ("unstructured", "2:4")
    assert "sparsity_pattern:stem.0" not in fitted
    assert fitted["sparsity_pattern:layer1.conv1"] == ("unstructured", "2:4")
    assert blind["rank_ratio:layer1.conv1"] == (1.0, 0.5, 0.25)
    assert fitted["rank_ratio:layer1.conv1"] == (1.0, 0.25)
    assert fitted["rank_ratio:fc"] == (1.0, 0.5, 0.25)  # Linear(32, 10): every rank saves
    assert set(fitted) <= set(blind)


def test_with_the_model_subclassed_layers_offer_no_rank() -> None:
    model = make_same_pad_net()
    layers = discover(model, (torch.randn(2, 1, 16, 16),))
    space = parse_space(_space(defaults={"rank_ratio": [1.0, 0.5]}))
    blind = {k.param for k in space.knobs(layers)}
    assert blind >= {f"rank_ratio:{name}" for name in SAME_PAD_LAYERS}
    # Every layer is a subclass (SameConv2d pads in forward, which a factorized pair would
    # not): none is offered a rank.
    assert not any(
        p.startswith("rank_ratio:") for p in {k.param for k in space.knobs(layers, model=model)}
    )
