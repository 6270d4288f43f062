"""Values that cross module boundaries: layer configs, plans and budgets, with versioned JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from autocompress.errors import BudgetError, PlanError

PLAN_VERSION = 1
# Distillation steps per trial: enough to recover most of a 50%-pruned ResNet-20's accuracy,
# few enough that the 30-trial demo fits in minutes on 2 cores.
DEFAULT_FINETUNE_STEPS = 60
# What a search times on when no --target is given: the fastest deployment runtime of the base
# install. A plan has to beat the dense model there, not in PyTorch eager (on effnet-fmnist,
# plain ONNX Runtime int8 runs in 0.68 ms, eager fp32 in 8.4 ms; zoo_pipeline.md).
DEFAULT_TARGET = "cpu:onnxruntime"


WEIGHT_BITS = (32, 16, 8, 4)
ACT_BITS = (32, 8)
SPARSITY_PATTERNS = ("unstructured", "2:4")

# Which knobs each method owns: `--methods` restricts a search to some of them.
METHOD_KNOBS = {
    "prune": ("keep_ratio",),
    "lowrank": ("rank_ratio",),
    "sparse": ("sparsity", "sparsity_pattern"),
    "quant": ("weight_bits", "act_bits"),
}


def _number(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PlanError(f"{name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LayerConfig:
    """How one layer is compressed. The defaults leave it as it is.

    Args:
        keep_ratio: fraction of output channels kept by structured pruning, in (0, 1].
        rank_ratio: low-rank factorization rank as a fraction of full rank, in (0, 1]; 1 = off.
        sparsity: fraction of weights zeroed by magnitude, in [0, 1).
        sparsity_pattern: "unstructured", or "2:4" (two of every four weights; sparsity 0.5).
        weight_bits: 32 (float), 16 (bfloat16), 8 or 4 (integer, per output channel).
        act_bits: 32 (float) or 8 (static int8 activations; needs weight_bits 8).
    """

    keep_ratio: float = 1.0
    rank_ratio: float = 1.0
    sparsity: float = 0.0
    sparsity_pattern: str = "unstructured"
    weight_bits: int = 32
    act_bits: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < _number("keep_ratio", self.keep_ratio) <= 1.0:
            raise PlanError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if not 0.0 < _number("rank_ratio", self.rank_ratio) <= 1.0:
            raise PlanError(f"rank_ratio must be in (0, 1], got {self.rank_ratio}")
        if not 0.0 <= _number("sparsity", self.sparsity) < 1.0:
            raise PlanError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.sparsity_pattern not in SPARSITY_PATTERNS:
            raise PlanError(
                f"sparsity_pattern must be one of {', '.join(SPARSITY_PATTERNS)}, "
                f"got {self.sparsity_pattern!r}"
            )
        if self.sparsity_pattern == "2:4" and self.sparsity not in (0.0, 0.5):
            raise PlanError(f"2:4 sparsity zeroes exactly half the weights; got {self.sparsity}")
        if self.weight_bits not in WEIGHT_BITS or isinstance(self.weight_bits, bool):
            raise PlanError(f"weight_bits must be one of {WEIGHT_BITS}, got {self.weight_bits!r}")
        if self.act_bits not in ACT_BITS or isinstance(self.act_bits, bool):
            raise PlanError(f"act_bits must be one of {ACT_BITS}, got {self.act_bits!r}")
        if self.act_bits == 8 and self.weight_bits != 8:
            raise PlanError(
                "act_bits 8 needs weight_bits 8 (static int8 kernels); "
                f"got weight_bits {self.weight_bits}"
            )

    @property
    def is_identity(self) -> bool:
        """True when this config leaves the layer exactly as it is."""
        return self == LayerConfig()

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults (an identity config is `{}`)."""
        default = LayerConfig()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "layer") -> LayerConfig:
        """Build from a JSON object, accepting only known keys with plain number values."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected an object of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"{where}: unknown setting {unknown[0]!r}; known: {sorted(known)}")
        return cls(**dict(data))


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
