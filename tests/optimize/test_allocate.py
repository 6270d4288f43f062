"""The allocator: a greedy descent over measured per-layer costs and predicted latency.

A hand-made space (three layers' keep ratios, their bits) with an additive latency model and
hand-set drops, so that every step can be checked by hand; the boundary cost of a float
layer among int8 ones is modelled as it is on a runtime target.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from autocompress.optimize.allocate import allocate, allocation_path, plans_for_budgets
from autocompress.space.spec import Knob

KEEPS = (1.0, 0.75, 0.5)
KNOBS = [
    *(Knob(f"keep_{n}", "keep_ratio", KEEPS, (n,)) for n in "abc"),
    *(Knob(f"bits_{n}", "weight_bits", (32, 8), (n,)) for n in "abc"),
    *(Knob(f"act_{n}", "act_bits", (32, 8), (n,)) for n in "abc"),
]
# Layer a is cheap to prune, c costly; int8 costs little everywhere.
DROPS = {
    ("keep_a", 0.75): 0.001, ("keep_a", 0.5): 0.004,
    ("keep_b", 0.75): 0.01, ("keep_b", 0.5): 0.03,
    ("keep_c", 0.75): 0.05, ("keep_c", 0.5): 0.2,
    # Int8 weights alone (w8a32) and with int8 activations (the act knob's row, w8a8).
    **{(f"bits_{n}", 8): 0.001 for n in "abc"},
    **{(f"act_{n}", 8): 0.002 for n in "abc"},
}  # fmt: skip
MS = {"a": 1.0, "b": 1.0, "c": 1.0}


def cost(param: str, value: Any) -> float:
    return DROPS.get((param, value), 0.0)


def predict_ms(params: dict[str, Any]) -> float:
    """Each layer's time scales with its keep ratio, int8 halves it, and every change between
    float and int8 along a -> b -> c costs 0.3 ms (a quantize/dequantize pair)."""
    total = 0.0
    for n in "abc":
        int8 = params[f"bits_{n}"] == 8 and params[f"act_{n}"] == 8
        total += MS[n] * params[f"keep_{n}"] * (0.5 if int8 else 1.0)
    formats = [params[f"bits_{n}"] == 8 and params[f"act_{n}"] == 8 for n in "abc"]
    total += 0.3 * sum(x != y for x, y in zip([False, *formats], [*formats, False], strict=True))
    return total


def test_the_descent_prunes_the_cheapest_layer_first_and_only_gets_faster() -> None:
    path = allocation_path(KNOBS, cost, predict_ms, frozen=frozenset({"weight_bits", "act_bits"}))
    assert path[0].params["keep_a"] == 1.0 and path[0].predicted_ms == pytest.approx(3.0)
    # Same time saved by every layer's first level: the cheapest (a) goes first, c last.
    assert path[1].params["keep_a"] == 0.75 and path[1].cost == pytest.approx(0.001)
    order = [next(k for k in "abc" if a.params[f"keep_{k}"] != b.params[f"keep_{k}"])
             for a, b in itertools.pairwise(path)]  # fmt: skip
    assert order.index("c") > order.index("b") > order.index("a")
    times = [a.predicted_ms for a in path]
    assert all(x > y for x, y in itertools.pairwise(times))
    assert path[-1].params == {**path[-1].params, "keep_a": 0.5, "keep_b": 0.5, "keep_c": 0.5}
    assert path[-1].cost == pytest.approx(0.004 + 0.03 + 0.2)


def test_a_descent_from_dense_never_takes_int8_one_layer_at_a_time_but_one_from_int8_prunes() -> (
    None
):
    from_dense = allocation_path(KNOBS, cost, predict_ms)
    # One layer in int8 saves 0.25-0.5 ms and costs a 0.6 ms boundary pair: never taken.
    assert all(a.params[f"bits_{n}"] == 32 for a in from_dense for n in "abc")
    int8 = {"weight_bits": 8, "act_bits": 8}
    from_int8 = allocation_path(
        KNOBS, cost, predict_ms, start=int8, frozen=frozenset({"weight_bits", "act_bits"})
    )
    assert from_int8[0].predicted_ms == pytest.approx(1.5 + 0.6)
    assert from_int8[0].cost == pytest.approx(3 * 0.002)  # w8a8 on three layers, counted once
    assert all(a.params[f"bits_{n}"] == 8 for a in from_int8 for n in "abc")
    assert from_int8[-1].predicted_ms == pytest.approx(0.75 + 0.6)


def test_allocations_meet_their_budgets_and_are_monotone_in_them() -> None:
    plans = allocate(KNOBS, cost, predict_ms, points=10)
    assert len(plans) >= 5
    budgets = [p.budget_ms for p in plans]
    assert budgets == sorted(budgets, reverse=True)
    for plan in plans:
        assert plan.predicted_ms <= plan.budget_ms + 1e-9
        assert predict_ms(plan.params) == pytest.approx(plan.predicted_ms)
    # A tighter budget never buys a cheaper plan.
    costs = [p.cost for p in plans]
    assert costs == sorted(costs)
    # The range spans dense (3.0 ms, not a plan to try) down to the fastest plan any path
    # reaches (int8, every layer at 0.5).
    assert plans[0].budget_ms == pytest.approx(3.0 - (3.0 - 1.35) / 10)
    assert all(p.cost > 0 for p in plans)
    assert plans[-1].predicted_ms == pytest.approx(0.75 + 0.6)


def test_a_budget_nothing_meets_gets_no_plan() -> None:
    path = allocation_path(KNOBS, cost, predict_ms)
    assert plans_for_budgets(path, [0.1]) == []


def test_depth_starts_drop_the_cheapest_blocks_first_on_the_int8_start() -> None:
    from autocompress.optimize.allocate import depth_starts

    blocks = "pqrst"
    knobs = [*KNOBS, *(Knob(f"drop_{n}", "drop_block", (False, True), (n,)) for n in blocks)]
    drop_cost = {"drop_p": 0.3, "drop_q": 0.05, "drop_r": 0.2, "drop_s": 0.1, "drop_t": 0.4}

    def costs(param: str, value: Any) -> float:
        return drop_cost[param] if value is True else cost(param, value)

    def with_blocks(params: dict[str, Any]) -> float:
        return predict_ms(params) + sum(0.0 if params[f"drop_{n}"] else 0.5 for n in blocks)

    starts = depth_starts(knobs, costs, with_blocks)
    dropped = [[n for n in blocks if s.params[f"drop_{n}"]] for s in starts]
    assert dropped == [["q"], ["q", "s"]]  # half of five blocks, least cost first
    for start in starts:
        assert all(
            start.params[f"bits_{n}"] == 8 and start.params[f"keep_{n}"] == 1.0 for n in "abc"
        )
        assert start.predicted_ms == pytest.approx(with_blocks(start.params))
    assert starts[1].cost == pytest.approx(3 * 0.002 + 0.05 + 0.1)
    assert starts[0].predicted_ms > starts[1].predicted_ms
    assert depth_starts(KNOBS, cost, predict_ms) == []  # no block to drop
