"""The quant method: its bit-width knobs and what they do; fake quantization for training is
`compress.quantize`, the real kernels `compress.quantize_real`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.compress.method import (
    Applying,
    Inputs,
    KernelEffect,
    Method,
    Offers,
    Values,
    register,
)
from autocompress.compress.quantize import fake_quantize, strip_fake_quant
from autocompress.compress.quantize_real import realize
from autocompress.compress.size import weight_storage_bytes
from autocompress.config import LayerConfig, Plan, Setting

WEIGHT_BITS = (32, 16, 8, 4)
ACT_BITS = (32, 8)
# The (weight, activation) bits a runtime target (ONNX Runtime, OpenVINO) runs in int8.
INT8 = (8, 8)


def _check_weight_bits(value: Any) -> str | None:
    if value not in WEIGHT_BITS or isinstance(value, bool):
        return f"weight_bits must be one of {WEIGHT_BITS}, got {value!r}"
    return None


def _check_act_bits(value: Any) -> str | None:
    if value not in ACT_BITS or isinstance(value, bool):
        return f"act_bits must be one of {ACT_BITS}, got {value!r}"
    return None


def _bits(plan: Plan) -> dict[str, tuple[int, int]]:
    return {n: (c.weight_bits, c.act_bits) for n, c in plan.layers.items() if c.weight_bits < 32}


@register
class Quant(Method):
    """Quantization. Knobs `weight_bits`: 32 (float, off), 16 (bfloat16), 8 or 4 (integer,
    per output channel); `act_bits`: 32 (float) or 8 (static int8 activations; needs
    weight_bits 8). Fake-quantized while fine-tuning; deployed on real int8 and bf16 kernels
    where the target has them, as size only elsewhere."""

    name = "quant"
    stage = 50
    warm_start = 1
    settings = (
        Setting("weight_bits", 32, _check_weight_bits, levels=(16, 8, 4),
                layer_types=frozenset({"Conv1d", "Conv2d", "Linear", "LSTM", "Embedding"})),
        Setting("act_bits", 32, _check_act_bits, levels=(8,)),
    )  # fmt: skip
    smallest: ClassVar[dict[str, Any]] = {"weight_bits": min}
    fast_level: ClassVar[dict[str, Any]] = {"weight_bits": 8, "act_bits": 8}
    fast_label = "w8a8"

    def rule(self, values: Values) -> str | None:
        """int8 activations need int8 weights (static int8 kernels)."""
        if values["act_bits"] == 8 and values["weight_bits"] != 8:
            return (
                "act_bits 8 needs weight_bits 8 (static int8 kernels); "
                f"got weight_bits {values['weight_bits']}"
            )
        return None

    def repair(self, values: dict[str, Any]) -> None:
        """int8 activations without int8 weights stay float."""
        if values.get("act_bits") == 8 and values.get("weight_bits", 32) != 8:
            values["act_bits"] = 32

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Fake-quantize each planned layer (straight-through estimator)."""
        fake_quantize(model, _bits(plan))

    def unrolls(self, cfg: LayerConfig) -> bool:
        """A quantized LSTM runs as Linear layers."""
        return cfg.weight_bits < 32

    def bake(self, model: nn.Module) -> None:
        """Fake-quant wrappers removed (their trained float weights kept)."""
        strip_fake_quant(model)

    def deploy(
        self,
        model: Any,
        plan: Plan,
        inputs: Inputs,
        calibration: Iterable[Inputs],
        *,
        compile: bool,
    ) -> Any:
        """Real kernels (`quantize_real.realize`); the float model when nothing is quantized."""
        bits = _bits(plan)
        if not bits:
            return model
        return realize(model, bits, inputs, calibration, compile=compile)

    def runtime_int8(self, cfg: LayerConfig) -> bool:
        """(8, 8) layers run in int8."""
        return (cfg.weight_bits, cfg.act_bits) == INT8

    def runtime_kind(self, cfg: LayerConfig) -> str | None:
        """Float with fewer-bit weights counted as size only (the runtime names its int8
        layers' scheme itself)."""
        if cfg.weight_bits < 32 and (cfg.weight_bits, cfg.act_bits) != INT8:
            return f"float ({cfg.weight_bits}-bit weights: size only)"
        return None

    def kernel_effect(self, cfg: LayerConfig) -> KernelEffect:
        """The kernel's number format."""
        return KernelEffect(bits=(cfg.weight_bits, cfg.act_bits))

    def stored_bytes(self, weight: torch.Tensor, cfg: LayerConfig, *, table: bool) -> int | None:
        """Values at `weight_bits` (in the smallest sparse form) plus the scales."""
        if cfg.weight_bits == 32:
            return None
        return weight_storage_bytes(weight, cfg.weight_bits, zero_points=not table)

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """int8 weights and activations, where some layer offers int8 weights."""
        return [dict(self.fast_level)] if 8 in offers.offered.get("weight_bits", []) else []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Each weight bit-width below 32 (8 with int8 activations where offered)."""
        levels = []
        for bits in sorted(
            (b for b in offers.offered.get("weight_bits", []) if b < 32), reverse=True
        ):
            act = 8 if bits == 8 and 8 in offers.offered.get("act_bits", []) else 32
            levels.append((f"w{bits}a{act}", {"weight_bits": bits, "act_bits": act}))
        return levels

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'int8 x4, bf16 x1, int4 x2': the layers at each bit-width."""
        parts = []
        for label, bits in (("int8", 8), ("bf16", 16), ("int4", 4)):
            count = sum(1 for c in configs if c.get("weight_bits") == bits)
            if count:
                parts.append(f"{label} x{count}")
        return parts
