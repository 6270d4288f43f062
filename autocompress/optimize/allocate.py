"""Per-layer plans along the whole latency range, allocated from measured per-layer costs.

A sampler with 30-40 trials over 60+ per-layer decisions does no better than chance
(reports/benchmarks/search_quality.md); HAQ, AMC and SPDY spend their budget on per-layer
measurements and then allocate. Here the measurements are the model's sensitivity (what each
level of each knob costs the metric alone, `evaluate.sensitivity`) and the latency predictor
(what a whole plan costs in time), and the allocation is a greedy descent of the
multiple-choice knapsack's Lagrangian: from a start plan, the move (one knob to a harsher
level) that buys the most predicted time per unit of estimated cost added is taken, again
and again until no move is faster. Each step's plan is a point of the path; for a latency
budget, the allocation is the path plan of least estimated cost that is predicted to meet it.

A plan's estimated cost adds its single changes' costs: their output distortion (the energy
of the change in the outputs, relative to the dense outputs'), which keeps ordering changes
where the metric saturates and adds up to first order across layers, or their metric drop
where outputs are not tensors. That additive model misses what the sampler is there for
(int8 boundaries, channel multiples, fine-tuning's recovery); the latency of every step
is the predictor's on the whole plan, so where time does not add up (a float layer between
int8 ones costs a quantize/dequantize pair) the path still sees it.
Paths start from the dense model and, where the space offers int8, from every layer in int8
(on a runtime target one float layer among int8 ones costs more than it saves, so a descent
from dense would never take int8 one layer at a time).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from autocompress.latency.predictor import LatencyPredictor
from autocompress.space.spec import Knob
from autocompress.space.uniform import uniform_params
from autocompress.task import Task

if TYPE_CHECKING:
    from autocompress.evaluate.sensitivity import Sensitivity

# The cost of a move measured at zero or below (noise): tiny, so that free time
# is taken first, but positive, so that ratios stay finite and ordered by the time saved.
FREE_COST = 1e-6
# The most blocks a depth start drops (`depth_starts`).
DEPTH_STARTS = 3
# Every move is scored afresh on the current plan this often; between, a move's score is
# refreshed only when it comes to the top (lazy greedy).
_FULL_EVERY = 16

Params = dict[str, Any]


@dataclass(frozen=True)
class Allocation:
    """One allocated plan.

    Args:
        params: sampler parameters for every knob (`enqueue_trial`, `FixedTrial`).
        predicted_ms: the predictor's latency for it.
        cost: its estimated cost (the sum of its changes' measured costs).
        budget_ms: the latency budget it was allocated for (None on a path point).
    """

    params: Params
    predicted_ms: float
    cost: float
    budget_ms: float | None = None


@dataclass(frozen=True)
class _Move:
    knob: Knob
    value: Any
    delta: Params  # the parameters it sets (its partner's too)
    cost: float


def moves(knobs: Sequence[Knob], cost: Callable[[str, Any], float]) -> list[_Move]:
    """Every single change of the space with its measured cost (floored at `FREE_COST`); a
    change reachable from two knobs (int8 weights with int8 activations) is listed once."""
    from autocompress.evaluate.sensitivity import single_changes

    base = uniform_params(knobs, {})
    found: dict[frozenset[tuple[str, Any]], _Move] = {}
    for knob, value, params in single_changes(knobs):
        delta = {p: v for p, v in params.items() if v != base[p]}
        key = frozenset(delta.items())
        measured = max(float(cost(knob.param, value)), FREE_COST)
        if key not in found or measured > found[key].cost:
            found[key] = _Move(knob=knob, value=value, delta=delta, cost=measured)
    return list(found.values())


def allocation_path(
    knobs: Sequence[Knob],
    cost: Callable[[str, Any], float],
    predict_ms: Callable[[Params], float],
    *,
    start: Mapping[str, Any] | None = None,
    start_params: Params | None = None,
    frozen: frozenset[str] = frozenset(),
    held: frozenset[str] = frozenset(),
) -> list[Allocation]:
    """The greedy descent from `start`: one plan per step, each predicted faster than the last.

    Args:
        knobs: the space's knobs for the model.
        cost: `(param, value) -> measured cost` of that single change (`Sensitivity.cost`:
            its output distortion, or its metric drop).
        predict_ms: a whole plan's predicted latency, from its sampler parameters.
        start: the settings every layer starts at where its knob offers them (e.g.
            `{"weight_bits": 8, "act_bits": 8}`); None: the dense model.
        start_params: a whole plan to start from instead (sampler parameters for every
            knob, e.g. a trial's), where the descent goes on (`optimize.refine`).
        frozen: settings the descent leaves as they start (e.g. the bits on an int8 path).
        held: knob parameters the descent leaves as they start (a move already judged).

    Returns:
        The start plan, then each step's plan, predicted latency strictly decreasing.
    """
    every = moves(knobs, cost)
    options = [m for m in every if m.knob.setting not in frozen and not held.intersection(m.delta)]
    current = dict(start_params) if start_params else uniform_params(knobs, dict(start or {}))
    # What the start plan already spends: each change it makes, counted once (int8 weights
    # and activations, not also int8 weights alone).
    made = [m for m in every if all(current.get(p) == v for p, v in m.delta.items())]
    spent: dict[str, float] = {}  # knob param -> cost of the move that set its level
    for move in made:
        if not any(move.delta.items() < other.delta.items() for other in made):
            spent[move.knob.param] = move.cost
    cache: dict[tuple[Any, ...], float] = {}

    def latency(params: Params) -> float:
        key = tuple(params[k.param] for k in knobs)
        if key not in cache:
            cache[key] = float(predict_ms(params))
        return cache[key]

    def score(move: _Move, now_ms: float) -> float | None:
        """Predicted time saved per unit of cost added; None for a move that is already
        made or saves no time. A move to a level measured no worse than the knob's current
        one adds `FREE_COST`."""
        if all(current.get(p) == v for p, v in move.delta.items()):
            return None
        saved = now_ms - latency({**current, **move.delta})
        if saved <= 0:
            return None
        return saved / max(move.cost - spent.get(move.knob.param, 0.0), FREE_COST)

    def rescored(indices: Sequence[int], now_ms: float) -> list[tuple[float, int]]:
        return [(-s, i) for i in indices if (s := score(options[i], now_ms)) is not None]

    path = [Allocation(dict(current), latency(current), sum(spent.values()))]
    heap: list[tuple[float, int]] = []
    for step in itertools.count():
        now_ms = path[-1].predicted_ms
        if step % _FULL_EVERY == 0:
            heap = rescored(range(len(options)), now_ms)
            heapq.heapify(heap)
        fresh: set[int] = set()
        taken = None
        while heap:
            _, i = heapq.heappop(heap)
            if i in fresh:  # scored on this plan and still on top
                taken = i
                break
            fresh.add(i)
            for entry in rescored([i], now_ms):  # none once it saves no more time
                heapq.heappush(heap, entry)
        if taken is None:
            break
        move = options[taken]
        current.update(move.delta)
        spent[move.knob.param] = move.cost
        path.append(Allocation(dict(current), latency(current), sum(spent.values())))
        # The knob's other levels are now priced from its new level: score them again.
        same = [i for i, m in enumerate(options) if m.knob.param == move.knob.param]
        heap = [entry for entry in heap if entry[1] not in same]
        heapq.heapify(heap)
        for entry in rescored(same, path[-1].predicted_ms):
            heapq.heappush(heap, entry)
    return path


def allocate(
    knobs: Sequence[Knob],
    cost: Callable[[str, Any], float],
    predict_ms: Callable[[Params], float],
    *,
    points: int = 10,
) -> list[Allocation]:
    """Plans for `points` latency budgets spread evenly from the dense model's latency (not
    included) to the fastest plan's.

    Args:
        knobs: the space's knobs for the model.
        cost: `(param, value) -> measured cost` of that single change (`Sensitivity.cost`:
            its output distortion, or its metric drop).
        predict_ms: a whole plan's predicted latency, from its sampler parameters.
        points: budgets to allocate for.

    Returns:
        One Allocation per distinct plan, fastest budget last: for each budget, the plan of
        least estimated cost on any path that is predicted to meet it.
    """
    paths = [allocation_path(knobs, cost, predict_ms)]
    if (int8 := _int8_start(knobs)) is not None:
        paths.append(allocation_path(knobs, cost, predict_ms, start=int8, frozen=frozenset(int8)))
    candidates = [a for path in paths for a in path if math.isfinite(a.predicted_ms)]
    if not candidates:
        return []
    return plans_for_budgets(candidates, budgets(candidates, points))


def depth_starts(
    knobs: Sequence[Knob],
    cost: Callable[[str, Any], float],
    predict_ms: Callable[[Params], float],
    *,
    most: int = DEPTH_STARTS,
) -> list[Allocation]:
    """Plans that drop the 1, 2, ... `most` blocks of least measured cost (at most half of the
    model's droppable blocks), every other layer as the int8 path starts (or as it is).

    Why: a block's measured cost is what dropping it does before any fine-tune, and a
    fine-tune recovers much of it, far more than it recovers of pruning at the same speed-up.
    On minilm-sentiment the descent priced its encoder layers so high (output distortion 0.08
    to 0.59 each; keep 0.875 of a layer group: median 0.002) that it dropped them only after
    pruning most Linears to a quarter or less, while with two of the six layers dropped and
    nothing else pruned the model kept 90.25% after the 60-step fine-tune (dense 90.95%) at
    1.5x the plain ORT int8 model. These plans let the fine-tune judge depth first.

    Args:
        knobs: the space's knobs for the model.
        cost: `(param, value) -> measured cost` of that single change.
        predict_ms: a whole plan's predicted latency, from its sampler parameters.
        most: the most blocks one plan drops.

    Returns:
        One Allocation per count of dropped blocks, fewest first; none where the space offers
        no block drop.
    """
    drops = sorted(
        (k for k in knobs if k.setting == "drop_block" and True in k.choices),
        key=lambda k: cost(k.param, True),
    )
    base = allocation_path(
        knobs,
        cost,
        predict_ms,
        start=_int8_start(knobs),
        frozen=frozenset(k.setting for k in knobs),  # the start plan alone
    )[0]
    found = []
    for count in range(1, min(most, len(drops) // 2) + 1):
        params = {**base.params, **{k.param: True for k in drops[:count]}}
        added = sum(max(float(cost(k.param, True)), FREE_COST) for k in drops[:count])
        found.append(Allocation(params, float(predict_ms(params)), base.cost + added))
    return found


def _int8_start(knobs: Sequence[Knob]) -> dict[str, int] | None:
    """The int8 path's start settings where the space offers int8 weights; else None."""
    if any(k.setting == "weight_bits" and 8 in k.choices for k in knobs):
        return {"weight_bits": 8, "act_bits": 8}
    return None


def budgets(candidates: Sequence[Allocation], points: int) -> list[float]:
    """`points` budgets evenly spaced below the slowest candidate's latency (the dense model's:
    no budget is spent on it), the last at the fastest's."""
    slowest = max(a.predicted_ms for a in candidates)
    fastest = min(a.predicted_ms for a in candidates)
    step = (slowest - fastest) / max(points, 1)
    return [slowest - i * step for i in range(1, max(points, 1) + 1)]


def plans_for_budgets(
    candidates: Sequence[Allocation], budget_list: Sequence[float]
) -> list[Allocation]:
    """For each budget, the candidate of least cost predicted to meet it (ties: the faster).

    Args:
        candidates: path points.
        budget_list: latency budgets in ms.

    Returns:
        One Allocation per budget that some candidate meets, distinct plans only, in the
        order of `budget_list`.
    """
    chosen: list[Allocation] = []
    for budget in budget_list:
        meeting = [a for a in candidates if a.predicted_ms <= budget + 1e-12]
        if not meeting:
            continue
        best = min(meeting, key=lambda a: (a.cost, a.predicted_ms))
        if all(best.params != c.params for c in chosen):
            chosen.append(Allocation(best.params, best.predicted_ms, best.cost, budget))
    return chosen


def allocation_seeds(
    dense: nn.Module,
    task: Task,
    knobs: Sequence[Knob],
    *,
    predictor: LatencyPredictor,
    dense_ms: float,
    model: str,
    round_to: int | None,
    points: int = 10,
    show_progress: bool = False,
) -> tuple[list[Allocation], Sensitivity, Path]:
    """The allocated plans a new study starts from, beside the uniform warm starts: one per
    latency budget (`allocate`), then the depth starts (`depth_starts`).

    Args:
        dense: the dense model.
        task: its task (the sensitivity is measured on its training split, cached).
        knobs: the space's knobs for the model.
        predictor: the target's fitted latency predictor for this model and space.
        dense_ms: the dense model's latency (the predictor predicts ratios to it).
        model: the model's label (the sensitivity cache's folder).
        round_to: the space's channel multiple.
        points: latency budgets to allocate for.
        show_progress: draw a progress bar while the sensitivity is measured.

    Returns:
        (the allocations, the sensitivity they were allocated from, its cache file).
    """
    from autocompress.evaluate.sensitivity import sensitivity_for

    measured, path = sensitivity_for(
        dense, task, knobs, model=model, round_to=round_to, show_progress=show_progress
    )
    predict_ms = plan_latency(knobs, predictor=predictor, dense_ms=dense_ms, round_to=round_to)
    seeds = allocate(knobs, measured.cost, predict_ms, points=points)
    seeds += [
        start
        for start in depth_starts(knobs, measured.cost, predict_ms)
        if math.isfinite(start.predicted_ms) and all(start.params != s.params for s in seeds)
    ]
    return seeds, measured, path


def plan_latency(
    knobs: Sequence[Knob], *, predictor: LatencyPredictor, dense_ms: float, round_to: int | None
) -> Callable[[Params], float]:
    """A whole plan's predicted latency in ms from its sampler parameters (inf where the
    profile has no plan of its regime: never a step).

    Args:
        knobs: the space's knobs for the model.
        predictor: the target's fitted latency predictor for this model and space.
        dense_ms: the dense model's latency (the predictor predicts ratios to it).
        round_to: the space's channel multiple.
    """
    from optuna.trial import FixedTrial

    from autocompress.space.sample import plan_from_trial

    def predict_ms(params: Params) -> float:
        plan = plan_from_trial(FixedTrial(params), knobs, round_to=round_to)
        try:
            return predictor.predict_ratio(plan) * dense_ms
        except ValueError:
            return math.inf

    return predict_ms
