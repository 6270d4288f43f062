"""Plans and budgets: JSON round-trips, strict parsing, and messages a person can act on."""

from __future__ import annotations

import json

import pytest

from autocompress.config import PLAN_VERSION, Budget, LayerConfig, Plan
from autocompress.errors import BudgetError, PlanError


def _plan_dict(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {"version": PLAN_VERSION, "round_to": None, "layers": {}}
    data.update(overrides)
    return data


@pytest.mark.parametrize("round_to", [None, 8])
def test_plan_json_round_trip(round_to: int | None) -> None:
    plan = Plan(
        layers={
            "layer2.conv1": LayerConfig(keep_ratio=0.25),
            "stem.0": LayerConfig(keep_ratio=0.5),
        },
        round_to=round_to,
    )
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.round_to == round_to
    assert dict(again.layers) == {
        "layer2.conv1": LayerConfig(keep_ratio=0.25),
        "stem.0": LayerConfig(keep_ratio=0.5),
    }
    assert json.loads(plan.to_json()) == {
        "version": PLAN_VERSION,
        "round_to": round_to,
        "layers": {"layer2.conv1": {"keep_ratio": 0.25}, "stem.0": {"keep_ratio": 0.5}},
    }


def test_plan_drops_identity_configs() -> None:
    plan = Plan(
        layers={
            "a": LayerConfig(keep_ratio=1.0),
            "b": LayerConfig(keep_ratio=0.5),
            "c": LayerConfig(),
        }
    )
    assert list(plan.layers) == ["b"]
    assert plan.config("a") == LayerConfig()
    assert plan.config("not-named") == LayerConfig()
    assert json.loads(plan.to_json())["layers"] == {"b": {"keep_ratio": 0.5}}
    assert Plan(layers={"a": LayerConfig(keep_ratio=1.0)}).is_identity
    assert Plan.from_json(Plan().to_json()) == Plan()


def test_plan_from_dict_reads_an_identity_layer_as_empty() -> None:
    plan = Plan.from_dict(_plan_dict(layers={"a": {}, "b": {"keep_ratio": 1.0}}))
    assert plan.is_identity


def test_plan_layers_are_read_only() -> None:
    plan = Plan(layers={"a": LayerConfig(keep_ratio=0.5)})
    with pytest.raises(TypeError):
        plan.layers["b"] = LayerConfig(keep_ratio=0.5)  # type: ignore[index]


def test_plan_from_dict_rejects_an_unknown_top_level_key() -> None:
    with pytest.raises(PlanError, match=r"unknown plan key 'bits'"):
        Plan.from_dict(_plan_dict(bits=8))


def test_plan_from_dict_rejects_an_unknown_layer_setting() -> None:
    with pytest.raises(PlanError, match=r"layer 'stem\.0': unknown setting 'keep'"):
        Plan.from_dict(_plan_dict(layers={"stem.0": {"keep": 0.5}}))


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_plan_from_dict_rejects_another_version(version: object) -> None:
    with pytest.raises(PlanError, match=r"unsupported plan version"):
        Plan.from_dict(_plan_dict(version=version))


def test_plan_from_dict_rejects_a_missing_version() -> None:
    with pytest.raises(PlanError, match=r"unsupported plan version None"):
        Plan.from_dict({"layers": {}})


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_plan_from_dict_rejects_a_keep_ratio_that_is_not_a_number(value: object) -> None:
    with pytest.raises(PlanError, match=r"keep_ratio must be a number"):
        Plan.from_dict(_plan_dict(layers={"stem.0": {"keep_ratio": value}}))


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.5])
def test_plan_from_dict_rejects_a_keep_ratio_out_of_range(value: float) -> None:
    with pytest.raises(PlanError, match=r"keep_ratio must be in \(0, 1\]"):
        Plan.from_dict(_plan_dict(layers={"stem.0": {"keep_ratio": value}}))


def test_plan_from_dict_rejects_layers_that_are_not_an_object() -> None:
    with pytest.raises(PlanError, match=r"'layers' must be an object"):
        Plan.from_dict(_plan_dict(layers=["stem.0"]))


def test_plan_from_dict_rejects_a_non_object() -> None:
    with pytest.raises(PlanError, match=r"must be a JSON object"):
        Plan.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("round_to", [0, -8, 2.5, "8"])
def test_plan_rejects_a_bad_round_to(round_to: object) -> None:
    with pytest.raises(PlanError, match=r"round_to must be a positive integer"):
        Plan.from_dict(_plan_dict(round_to=round_to))


def test_plan_rejects_a_boolean_round_to() -> None:
    with pytest.raises(PlanError, match=r"round_to must be a positive integer"):
        Plan.from_dict(_plan_dict(round_to=True))


def test_plan_from_json_rejects_text_that_is_not_json() -> None:
    with pytest.raises(PlanError, match=r"not valid JSON"):
        Plan.from_json("{version: 1")


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [("2ms", 2.0), ("500us", 0.5), ("1.5s", 1500.0), ("2 ms", 2.0), ("2MS", 2.0)],
)
def test_budget_parses_latency(text: str, expected_ms: float) -> None:
    budget = Budget.parse(latency=text)
    assert budget.latency_ms == pytest.approx(expected_ms)
    assert budget.size_bytes is None
    assert budget.max_drop is None


@pytest.mark.parametrize(
    ("text", "expected_bytes"),
    [("5MB", 5_000_000), ("64KiB", 65_536), ("1.5kB", 1500), ("2MiB", 2 * 1024**2), ("100b", 100)],
)
def test_budget_parses_size(text: str, expected_bytes: int) -> None:
    budget = Budget.parse(size=text)
    assert budget.size_bytes == expected_bytes
    assert isinstance(budget.size_bytes, int)


def test_budget_parses_drop_as_a_fraction() -> None:
    assert Budget.parse(drop="1%").max_drop == pytest.approx(0.01)
    assert Budget.parse(drop="0.5%").max_drop == pytest.approx(0.005)


def test_budget_parses_all_three_at_once() -> None:
    budget = Budget.parse(latency="2ms", size="5MB", drop="1%")
    assert budget.to_dict() == {"latency_ms": 2.0, "size_bytes": 5_000_000, "max_drop": 0.01}
    assert budget.describe() == "latency <= 2 ms, size <= 5000.0 kB, accuracy drop <= 1 points"
    assert Budget.parse() == Budget()
    assert Budget().describe() == "no budget"


def test_budget_unknown_unit_names_the_accepted_units() -> None:
    with pytest.raises(BudgetError, match=r"unknown unit 'parsecs'.*accepted units: .*\bms\b"):
        Budget.parse(latency="50parsecs")


def test_budget_size_unknown_unit_names_the_flag_and_units() -> None:
    with pytest.raises(BudgetError, match=r"--max-size.*accepted units: .*\bmb\b"):
        Budget.parse(size="5ms")


@pytest.mark.parametrize("text", ["-1ms", " -1ms", "0ms", "0.0s"])
def test_budget_latency_must_be_positive(text: str) -> None:
    with pytest.raises(BudgetError, match=r"--budget must be positive"):
        Budget.parse(latency=text)


def test_budget_rejects_text_without_a_number() -> None:
    with pytest.raises(BudgetError, match=r"cannot read --budget 'abc'.*e\.g\. 50ms"):
        Budget.parse(latency="abc")


def test_budget_rejects_a_number_without_a_unit() -> None:
    with pytest.raises(BudgetError, match=r"unknown unit '\(none\)' in --budget '5'"):
        Budget.parse(latency="5")


def test_budget_drop_rejects_a_unit_other_than_percent() -> None:
    with pytest.raises(BudgetError, match=r"--max-drop.*accepted units: %"):
        Budget.parse(drop="1pt")


def test_budget_size_below_one_byte_is_rejected() -> None:
    with pytest.raises(BudgetError, match=r"--max-size"):
        Budget.parse(size="0.5B")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"act_bits": 8}, "act_bits 8 needs weight_bits 8"),
        ({"sparsity": 0.7, "sparsity_pattern": "2:4"}, "2:4 sparsity zeroes exactly half"),
        ({"sparsity_pattern": "4:8"}, "sparsity_pattern must be one of"),
        ({"weight_bits": 3}, r"weight_bits must be one of \(32, 16, 8, 4\)"),
        ({"rank_ratio": 0.0}, r"rank_ratio must be in \(0, 1\]"),
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"weight_bits": True}, "weight_bits must be one of"),
    ],
)
def test_layer_config_rejects_invalid_method_settings(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        LayerConfig(**settings)


def test_every_method_setting_round_trips_through_json() -> None:
    plan = Plan(
        layers={
            "a": LayerConfig(keep_ratio=0.5, rank_ratio=0.25),
            "b": LayerConfig(sparsity=0.5, sparsity_pattern="2:4", weight_bits=8, act_bits=8),
            "c": LayerConfig(weight_bits=4, sparsity=0.9),
        }
    )
    assert Plan.from_json(plan.to_json()) == plan


def test_plan_key_is_equal_for_equal_plans_and_matches_the_sorted_dict() -> None:
    a = Plan(layers={"b": LayerConfig(keep_ratio=0.5), "a": LayerConfig(weight_bits=8)})
    b = Plan(layers={"a": LayerConfig(weight_bits=8), "b": LayerConfig(keep_ratio=0.5)})
    identity_dropped = Plan(layers={**b.layers, "c": LayerConfig()})
    assert a.key() == b.key() == identity_dropped.key()
    assert a.key() != Plan(layers={"a": LayerConfig(weight_bits=8)}).key()
    assert a.key() == json.dumps(a.to_dict(), sort_keys=True)
