"""Values that cross module boundaries: layer configs, plans and budgets, with versioned JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autocompress.errors import BudgetError, PlanError

PLAN_VERSION = 1
# Distillation steps per trial: enough to recover most of a 50%-pruned ResNet-20's accuracy,
# few enough that the 30-trial demo fits in minutes on 2 cores.
DEFAULT_FINETUNE_STEPS = 60
# The last trials of a search call that fine-tune the fastest plans near the accuracy floor
# for longer (`optimize.polish`), and how much longer, in multiples of the trials' steps.
DEFAULT_POLISH = 3
POLISH_STEPS_FACTOR = 4
# What a search times on when no --target is given: the fastest deployment runtime of the base
# install. A plan has to beat the dense model there, not in PyTorch eager (on effnet-fmnist,
# plain ONNX Runtime int8 runs in 0.68 ms, eager fp32 in 8.4 ms; zoo_pipeline.md).
DEFAULT_TARGET = "cpu:onnxruntime"


Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Setting:
    """One knob of `LayerConfig`, declared by the compression method that owns it.

    Args:
        name: its key in a plan's JSON and its `LayerConfig` attribute ("keep_ratio").
        default: the value that leaves a layer as it is (the method is off).
        check: why a value is not allowed, in words, or None when it is: the value alone;
            rules between knobs are the method's own (`register_settings(rule=...)`).
        levels: the values besides the default worth offering (what the packaged spaces
            choose from; the contract test applies each).
        layer_types: the layer types (`space.discover.layer_type`) a search space offers it on.
        decided_per: what one decision of it covers: "layer"; "group", a coupling group
            (layers whose output channels are pruned together); or "block", the layers of one
            residual block (`space.discover.LayerInfo.block`).
    """

    name: str
    default: Any
    check: Check
    levels: tuple[Any, ...] = ()
    layer_types: frozenset[str] = frozenset({"Conv1d", "Conv2d", "Linear"})
    decided_per: str = "layer"


# The knobs of every registered method, in `compress.apply`'s order, and the methods' rules
# between knobs. The compress layer fills them (`register_settings`) when it is imported; the
# values layer cannot import it, so the package's `__init__` (the top layer) hands in a loader
# that imports it the first time a knob is looked up (`load_settings_with`).
_SETTINGS: dict[str, Setting] = {}
_ORDER: dict[str, tuple[int, int]] = {}
_RULES: list[Callable[[Mapping[str, Any]], str | None]] = []
_REPAIRS: list[Callable[[dict[str, Any]], None]] = []
_LOADERS: list[Callable[[], object]] = []


def register_settings(
    settings: Sequence[Setting],
    *,
    order: int,
    rule: Callable[[Mapping[str, Any]], str | None] | None = None,
    repair: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Add a method's knobs to `LayerConfig` (called by `compress.method.register`).

    Args:
        settings: the knobs, in the order the method reads them.
        order: the method's stage in `compress.apply`; knobs are listed in stage order.
        rule: why a full set of knob values cannot go together, or None when it can.
        repair: map an impossible combination to the nearest valid one, in place.

    Raises:
        ValueError: a knob name is registered twice.
    """
    for setting in settings:
        if setting.name in _SETTINGS:
            raise ValueError(f"knob {setting.name!r} is registered twice")
    _ORDER.update({s.name: (order, len(_ORDER)) for s in settings})
    merged = [*_SETTINGS.values(), *settings]
    _SETTINGS.clear()
    _SETTINGS.update({s.name: s for s in sorted(merged, key=lambda s: _ORDER[s.name])})
    if rule is not None:
        _RULES.append(rule)
    if repair is not None:
        _REPAIRS.append(repair)


def load_settings_with(loader: Callable[[], object]) -> None:
    """Run `loader` (it imports the methods, which register their knobs) before the first
    knob is looked up."""
    _LOADERS.append(loader)


def settings() -> Mapping[str, Setting]:
    """Every registered knob by name, in `compress.apply`'s order."""
    while _LOADERS:
        _LOADERS.pop(0)()
    return MappingProxyType(_SETTINGS)


def default_of(name: str) -> Any:
    """The value of knob `name` that leaves a layer as it is."""
    return settings()[name].default


def check_setting(name: str, value: Any) -> None:
    """Check one knob value alone (no rules between knobs).

    Raises:
        PlanError: an unknown knob, or a value it does not allow.
    """
    known = settings()
    if name not in known:
        raise PlanError(f"unknown setting {name!r}; known: {sorted(known)}")
    problem = known[name].check(value)
    if problem is not None:
        raise PlanError(problem)


def repair(values: dict[str, Any]) -> dict[str, Any]:
    """Map impossible combinations to the nearest valid ones, as each method's rule says
    (int8 activations without int8 weights stay float; 2:4 zeroes exactly half), in place.

    Returns:
        `values`, repaired.
    """
    settings()
    for fix in _REPAIRS:
        fix(values)
    return values


def number(name: str, value: object) -> float:
    """`value` as a float, for a knob's check.

    Raises:
        PlanError: it is not an int or float (booleans are not numbers here).
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PlanError(f"{name} must be a number, got {value!r}")
    return float(value)


class LayerConfig:
    """How one layer is compressed: one value per knob of the registered methods
    (`compress.METHODS`); a knob not given keeps its default, which leaves the layer as it is.

    `LayerConfig(keep_ratio=0.5, weight_bits=8)` (knobs by name only: a method added at an
    earlier stage would shift positions); read as `cfg.keep_ratio` or `cfg["keep_ratio"]`.
    Each knob is documented by the method that owns it (`compress/prune.py`, ...). Immutable
    and hashable; equal when every knob is equal.

    Raises:
        TypeError: an unknown knob name.
        PlanError: a value its knob does not allow, or values that cannot go together.
    """

    __slots__ = ("_values",)
    _values: Mapping[str, Any]

    def __init__(self, **values: Any) -> None:
        known = settings()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TypeError(f"LayerConfig got an unknown knob {unknown[0]!r}")
        full = {name: values.get(name, s.default) for name, s in known.items()}
        for name, value in full.items():
            check_setting(name, value)
        for rule in _RULES:
            problem = rule(full)
            if problem is not None:
                raise PlanError(problem)
        object.__setattr__(self, "_values", MappingProxyType(full))

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            try:
                return self._values[name]
            except KeyError:
                pass
        raise AttributeError(f"LayerConfig has no knob {name!r}")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LayerConfig is immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerConfig):
            return NotImplemented
        return dict(self._values) == dict(other._values)

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"LayerConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_layer_config, (self.to_dict(),))

    @property
    def values(self) -> Mapping[str, Any]:
        """Every knob's value, defaults included, in the knobs' order."""
        return self._values

    def replace(self, **changes: Any) -> LayerConfig:
        """A copy with some knobs changed (checked like a new config)."""
        return LayerConfig(**{**self._values, **changes})

    @property
    def is_identity(self) -> bool:
        """True when this config leaves the layer exactly as it is."""
        return self == LayerConfig()

    def to_dict(self) -> dict[str, Any]:
        """The knobs that differ from their defaults (an identity config is `{}`)."""
        known = settings()
        return {k: v for k, v in self._values.items() if v != known[k].default}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "layer") -> LayerConfig:
        """Build from a JSON object, accepting only known keys with plain number values."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected an object of settings, got {type(data).__name__}")
        known = settings()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PlanError(f"{where}: unknown setting {unknown[0]!r}; known: {sorted(known)}")
        return cls(**dict(data))


def _layer_config(values: dict[str, Any]) -> LayerConfig:
    """Unpickle a LayerConfig (its knob values are plain JSON values)."""
    return LayerConfig(**values)


@dataclass(frozen=True)
class Plan:
    """A per-layer compression plan: the replayable record of every edit made to a dense model.

    Args:
        layers: layer name (as in `model.named_modules()`) -> config; unnamed layers stay as is.
        round_to: prune channel counts to a multiple of this (kernel-friendly widths), or None.
    """

    layers: Mapping[str, LayerConfig] = field(default_factory=dict)
    round_to: int | None = None

    def __post_init__(self) -> None:
        round_to = self.round_to
        if round_to is not None and (
            not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1
        ):
            raise PlanError(f"round_to must be a positive integer or null, got {self.round_to!r}")
        cleaned = {name: cfg for name, cfg in sorted(self.layers.items()) if not cfg.is_identity}
        object.__setattr__(self, "layers", MappingProxyType(cleaned))

    def config(self, layer: str) -> LayerConfig:
        """The config of `layer` (identity when the plan does not name it)."""
        return self.layers.get(layer, LayerConfig())

    @property
    def is_identity(self) -> bool:
        """True when the plan changes nothing."""
        return not self.layers

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a schema version."""
        return {
            "version": PLAN_VERSION,
            "round_to": self.round_to,
            "layers": {name: cfg.to_dict() for name, cfg in self.layers.items()},
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The plan as JSON text (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    def key(self) -> str:
        """The plan's identity as a string (plans hold mappings, so they do not hash): equal
        plans give equal keys, and it equals the key of `to_dict()` dumped with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Parse a plan dict, checking every key and type (nothing in it is ever evaluated)."""
        if not isinstance(data, Mapping):
            raise PlanError("a plan must be a JSON object with 'version' and 'layers'")
        version = data.get("version")
        if version != PLAN_VERSION:
            raise PlanError(
                f"unsupported plan version {version!r}; this autocompress reads {PLAN_VERSION}"
            )
        unknown = sorted(set(data) - {"version", "round_to", "layers"})
        if unknown:
            raise PlanError(f"unknown plan key {unknown[0]!r}; known: layers, round_to, version")
        layers = data.get("layers", {})
        if not isinstance(layers, Mapping):
            raise PlanError("plan 'layers' must be an object of layer name -> settings")
        return cls(
            layers={
                str(n): LayerConfig.from_dict(c, where=f"layer {n!r}") for n, c in layers.items()
            },
            round_to=data.get("round_to"),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse plan JSON text (see `from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_LATENCY_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-zµ%]*)\s*$", re.IGNORECASE)


def _parse(text: str, units: Mapping[str, float], flag: str, example: str) -> float:
    match = _NUMBER_UNIT.match(str(text))
    accepted = ", ".join(units)
    if text is None or (isinstance(text, str) and text.strip().startswith("-")):
        raise BudgetError(f"{flag} must be positive, got {text!r}; e.g. {flag} {example}")
    if not match:
        raise BudgetError(
            f"cannot read {flag} {text!r}; write a number and a unit ({accepted}), e.g. {example}"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in units:
        raise BudgetError(
            f"unknown unit {unit or '(none)'!r} in {flag} {text!r}; accepted units: {accepted}"
        )
    value = number * units[unit]
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{flag} must be positive, got {text!r}; e.g. {flag} {example}")
    return value


def _parse_bytes(text: str) -> int:
    value = int(_parse(text, _SIZE_UNITS, "--max-size", "5MB"))
    if value < 1:
        raise BudgetError(f"--max-size must be at least 1 byte, got {text!r}; e.g. --max-size 5MB")
    return value


def _parse_drop(text: str) -> float:
    value = _parse(text, {"%": 0.01}, "--max-drop", "1%")
    if value >= 1.0:
        raise BudgetError(
            f"--max-drop must be below 100%, got {text!r} (every candidate would pass); "
            "e.g. --max-drop 1%"
        )
    return value


# Accuracy drops are judged against a budget to this many decimals: a drop of exactly the
# budget is within it, though floats may make it 1e-17 over (0.9175 - 0.9075 against 1%).
_DROP_DIGITS = 9


def drop_over(dense: float, accuracy: float, max_drop: float) -> float:
    """How far `accuracy` lost more than `max_drop` against `dense`; <= 0 when within it.

    Args:
        dense: the dense model's accuracy.
        accuracy: a candidate's accuracy.
        max_drop: the most accuracy it may lose, as a fraction (0.01 = 1 point).
    """
    return round(dense - accuracy - max_drop, _DROP_DIGITS)


@dataclass(frozen=True)
class Budget:
    """What the deployment allows. Any field may be None (no limit).

    Args:
        latency_ms: the most latency per batch on the target, in milliseconds.
        size_bytes: the most bytes of the serialized model.
        max_drop: the most accuracy lost against the dense model, as a fraction (0.01 = 1 point).
    """

    latency_ms: float | None = None
    size_bytes: int | None = None
    max_drop: float | None = None

    @classmethod
    def parse(
        cls, *, latency: str | None = None, size: str | None = None, drop: str | None = None
    ) -> Budget:
        """Parse the CLI strings `50ms`, `5MB`, `1%` (each optional).

        Returns:
            The budget; raises BudgetError naming the flag and the accepted units.
        """
        return cls(
            latency_ms=None
            if latency is None
            else _parse(latency, _LATENCY_UNITS, "--budget", "50ms"),
            size_bytes=None if size is None else _parse_bytes(size),
            max_drop=None if drop is None else _parse_drop(drop),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict."""
        return {
            "latency_ms": self.latency_ms,
            "size_bytes": self.size_bytes,
            "max_drop": self.max_drop,
        }

    def describe(self) -> str:
        """A short human line, e.g. 'latency <= 2 ms, size <= 50.0 kB'."""
        parts = []
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:g} ms")
        if self.size_bytes is not None:
            parts.append(f"size <= {self.size_bytes / 1000:.1f} kB")
        if self.max_drop is not None:
            parts.append(f"accuracy drop <= {100 * self.max_drop:g} points")
        return ", ".join(parts) or "no budget"
