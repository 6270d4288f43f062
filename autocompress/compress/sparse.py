"""The sparse method: its knobs and what they do; masks, storage formats and the CSR Linear
are `compress.sparsify`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from autocompress.compress import sparsify
from autocompress.compress.method import Applying, Method, Offers, Values, register
from autocompress.config import LayerConfig, Plan, Setting, number


def _check_sparsity(value: Any) -> str | None:
    if not 0.0 <= number("sparsity", value) < 1.0:
        return f"sparsity must be in [0, 1), got {value}"
    return None


def _check_pattern(value: Any) -> str | None:
    if value not in sparsify.PATTERNS:
        return f"sparsity_pattern must be one of {', '.join(sparsify.PATTERNS)}, got {value!r}"
    return None


@register
class Sparse(Method):
    """Magnitude sparsity, held by masks through fine-tuning. Knobs `sparsity`: the fraction
    of weights zeroed, in [0, 1), 0 = off; `sparsity_pattern`: "unstructured", or "2:4" (two
    of every four weights: sparsity 0.5). Stored in the smallest of dense, bitmask and CSR
    form; no faster kernel is claimed (deployed dense)."""

    name = "sparse"
    stage = 30
    warm_start = 2
    settings = (
        Setting("sparsity", 0.0, _check_sparsity, levels=(0.5, 0.75)),
        Setting("sparsity_pattern", "unstructured", _check_pattern, levels=("2:4",)),
    )
    smallest: ClassVar[dict[str, Any]] = {
        "sparsity": max,
        "sparsity_pattern": lambda c: "unstructured" if "unstructured" in c else c[0],
    }

    def rule(self, values: Values) -> str | None:
        """2:4 zeroes exactly half the weights."""
        if values["sparsity_pattern"] == "2:4" and values["sparsity"] not in (0.0, 0.5):
            return f"2:4 sparsity zeroes exactly half the weights; got {values['sparsity']}"
        return None

    def repair(self, values: dict[str, Any]) -> None:
        """A 2:4 layer with any sparsity gets 0.5."""
        if values.get("sparsity_pattern") == "2:4" and values.get("sparsity", 0.0):
            values["sparsity"] = 0.5

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Mask the smallest weights of each planned layer (`sparsify.sparsify`)."""
        sparsify.sparsify(
            model, {n: (c.sparsity, c.sparsity_pattern) for n, c in plan.layers.items()
                    if c.sparsity > 0}
        )  # fmt: skip

    def bake(self, model: nn.Module) -> None:
        """Masks become exact zeros."""
        sparsify.bake(model)

    def refusal(self, module: nn.Module, setting: str, value: Any) -> str | None:
        """No n:m pattern on an input width it does not divide."""
        if setting == "sparsity_pattern" and isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear):
            return sparsify.pattern_refusal(module.weight, value)
        return None

    def stored_bytes(self, weight: torch.Tensor, cfg: LayerConfig, *, table: bool) -> int | None:
        """The smallest of dense, bitmask and CSR storage (`sparsify.sparse_weight_bytes`)."""
        return sparsify.sparse_weight_bytes(weight, bits=32) if cfg.sparsity > 0 else None

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """The mildest sparsity above 0, unstructured."""
        amounts = [s for s in offers.offered.get("sparsity", []) if s > 0.0]
        return [{"sparsity": min(amounts), "sparsity_pattern": "unstructured"}] if amounts else []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Each sparsity above 0 with each pattern (2:4 only at 0.5)."""
        levels = []
        for amount in sorted(s for s in offers.offered.get("sparsity", []) if s > 0.0):
            for pattern in offers.offered.get("sparsity_pattern") or ["unstructured"]:
                if pattern == "2:4" and amount != 0.5:
                    continue  # 2:4 always zeroes half the weights
                label = f"sparse {amount:g} {pattern}"
                levels.append((label, {"sparsity": amount, "sparsity_pattern": pattern}))
        return levels

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'sparse x3': the layers with zeroed weights."""
        count = sum(1 for c in configs if c.get("sparsity", 0) > 0)
        return [f"sparse x{count}"] if count else []
