"""Uniform plans: every layer at the same setting, one method at a time or a known-good pair.

They are what a user tries by hand before searching (prune every layer to 62.5%, int8
everywhere), so a search starts from them (warm start) and a benchmark compares against
them. Every knob a plan does not set stays at its identity value (no compression): a warm
start of "int8 everywhere" must not also draw random ranks and sparsity for its layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autocompress.compress.method import METHODS, Method, Offers, ordered
from autocompress.config import settings
from autocompress.space.spec import Knob

# The value of each knob that leaves a layer as it is.
IDENTITY: dict[str, Any] = {name: s.default for name, s in settings().items()}


def _shared(knobs: Sequence[Knob], setting: str) -> list[Any]:
    """Choices every knob of this setting offers (sorted), so one value fits every group."""
    sets = [set(k.choices) for k in knobs if k.setting == setting]
    return sorted(set.intersection(*sets)) if sets else []


def _offered(knobs: Sequence[Knob], setting: str) -> list[Any]:
    """Choices some knob of this setting offers (sorted); layers without one stay as they are."""
    return sorted({c for k in knobs if k.setting == setting for c in k.choices})


def _offers(knobs: Sequence[Knob]) -> Offers:
    """What the space offers per knob, as the methods read it."""
    names = {k.setting for k in knobs}
    return Offers(
        offered={s: _offered(knobs, s) for s in names},
        shared={s: _shared(knobs, s) for s in names},
    )


def _warm_order() -> list[Method]:
    """The registered methods in the order warm starts try them (pruning, int8, sparsity,
    low rank, then methods added since)."""
    return sorted(ordered(), key=lambda m: m.warm_start)


def uniform_levels(knobs: Sequence[Knob], method: str) -> list[dict[str, Any]]:
    """The uniform settings worth trying for one method, mildest first
    (`Method.uniform_levels`).

    Args:
        knobs: the space's knobs for the model.
        method: a registered method's name ("prune", "quant", "lowrank", "sparse", ...).

    Returns:
        One `{setting: value}` per level: keep ratios (every other one in [0.3, 1) that every
        coupling group offers), int8 weights and activations, the mildest rank ratio below 1,
        the mildest sparsity above 0 (each where a layer offers it), and so on.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS.names()}")
    return METHODS.get(method).uniform_levels(_offers(knobs))


def uniform_params(knobs: Sequence[Knob], settings: dict[str, Any]) -> dict[str, Any]:
    """Sampler parameters for one uniform plan: `settings` on every layer whose knob offers
    them, the identity value on every other knob, or its mildest choice where the knob does
    not offer the identity (e.g. embedding tables that are always int8 or int4).

    Args:
        knobs: the space's knobs.
        settings: `{setting: value}`, e.g. `{"keep_ratio": 0.625, "weight_bits": 8}`.

    Returns:
        `{param: value}` for every knob, for `optuna` (`enqueue_trial`, `FixedTrial`).
    """
    params = {}
    for knob in knobs:
        value = settings.get(knob.setting, IDENTITY[knob.setting])
        if value not in knob.choices:
            value = _mildest(knob)
        params[knob.param] = value
    return params


def _mildest(knob: Knob) -> Any:
    """The knob's choice closest to leaving the layer as it is (its first, if not numeric)."""
    identity = IDENTITY[knob.setting]
    if identity in knob.choices or not isinstance(identity, int | float):
        return identity if identity in knob.choices else knob.choices[0]
    return min(knob.choices, key=lambda c: abs(c - identity))


def uniform_plans(knobs: Sequence[Knob]) -> list[dict[str, Any]]:
    """Warm-start points, as sampler parameters: the mildest plan where it compresses, each
    method's uniform levels alone (pruning, then int8, sparsity, low-rank), then each keep
    ratio in [0.3, 1) with int8, mildest first.

    Pruning with int8 gets every keep ratio, not every other one: on an int8 target those
    pairs are the fastest and smallest uniform plans, and where int8 sets the latency they
    differ in size and accuracy only, so each is a distinct point of the front a search
    starts from (on digits-resnet the uniform sweep, which has them all, out-scored a joint
    search that started from one; reports/benchmarks/search_quality.md).

    Args:
        knobs: the space's knobs for the model (a space without a method's knobs gets none
            of its plans).

    Returns:
        Distinct parameter sets that each compress something, in the order to try them.
    """
    offers, methods = _offers(knobs), _warm_order()
    # First the mildest plan: it compresses where a knob offers no "as it is" choice (a
    # transformer space's int8-only projections: then it is plain int8 everywhere).
    levels: list[dict[str, Any]] = [{}]
    levels += [level for method in methods for level in method.uniform_levels(offers)]
    for fast in methods:
        if fast.fast_level and (own := fast.uniform_levels(offers)):
            paired = [lv for m in methods for _, lv in m.paired_levels(offers, every=False)]
            levels += [{**level, **own[0]} for level in paired]
    plans: list[dict[str, Any]] = []
    for level in levels:
        params = uniform_params(knobs, level)
        if _compresses(knobs, params) and params not in plans:
            plans.append(params)
    return plans


def _compresses(knobs: Sequence[Knob], params: dict[str, Any]) -> bool:
    """Whether a plan changes any layer (some knob away from its identity value)."""
    return any(params[k.param] != IDENTITY[k.setting] for k in knobs)


def uniform_sweep(knobs: Sequence[Knob]) -> list[tuple[str, dict[str, Any]]]:
    """Every uniform setting the space offers, each once: the baselines a search must beat.

    Unlike `uniform_plans` (a few warm starts), this is every level of each method
    (`Method.sweep_levels`, in warm-start order: every keep ratio every coupling group offers,
    each weight bit-width below 32 (8 with int8 activations), each sparsity above 0 with each
    pattern, each rank ratio below 1, ...), then each keep ratio with int8.

    Args:
        knobs: the space's knobs for the model.

    Returns:
        `(label, params)` pairs, mildest first within each method; plans that compress
        nothing or repeat an earlier one are left out.
    """
    offers, methods = _offers(knobs), _warm_order()
    levels = [level for method in methods for level in method.sweep_levels(offers)]
    for fast in methods:
        if fast.fast_level and (own := fast.uniform_levels(offers)):
            paired = [lv for m in methods for lv in m.paired_levels(offers, every=True)]
            levels += [(f"{label} + {fast.fast_label}", {**lv, **own[0]}) for label, lv in paired]
    sweep: list[tuple[str, dict[str, Any]]] = []
    for label, level in levels:
        params = uniform_params(knobs, level)
        if _compresses(knobs, params) and all(params != p for _, p in sweep):
            sweep.append((label, params))
    return sweep
