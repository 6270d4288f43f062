"""The low-rank method: its knob and what it does; the factorization itself is
`compress.factorize` (and `compress.lstm` for LSTM layers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from autocompress.compress.factorize import factorize, unsupported_reason
from autocompress.compress.lstm import lstm_ranks
from autocompress.compress.method import Applying, KernelEffect, Method, Offers, Values, register
from autocompress.config import LayerConfig, Plan, Setting, number


def _check_rank(value: Any) -> str | None:
    if not 0.0 < number("rank_ratio", value) <= 1.0:
        return f"rank_ratio must be in (0, 1], got {value}"
    return None


@register
class LowRank(Method):
    """Low-rank factorization (truncated SVD into two layers). Knob `rank_ratio`: the rank
    kept as a fraction of full rank, in (0, 1]; 1.0 = off. An LSTM is unrolled first."""

    name = "lowrank"
    stage = 20
    warm_start = 3
    settings = (
        Setting("rank_ratio", 1.0, _check_rank, levels=(0.5, 0.25),
                layer_types=frozenset({"Conv1d", "Conv2d", "Linear", "LSTM"})),
    )  # fmt: skip
    fastest: ClassVar[dict[str, Any]] = {"rank_ratio": min}
    smallest: ClassVar[dict[str, Any]] = {"rank_ratio": min}
    # At batch 1 a factorized layer is two calls: its lowest rank is not always faster.
    always_faster = False

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Factorize each planned layer (an unrolled LSTM's two matrices)."""
        ranks = {n: c.rank_ratio for n, c in plan.layers.items() if c.rank_ratio < 1.0}
        factorize(model, lstm_ranks(model, ranks, context.unrolled))

    def unrolls(self, cfg: LayerConfig) -> bool:
        """A factorized LSTM runs as Linear layers."""
        return cfg.rank_ratio < 1.0

    def refusal(self, module: nn.Module, setting: str, value: Any) -> str | None:
        """No rank that saves no weights; no depthwise or forward-padding convolution."""
        if setting == "rank_ratio" and value < 1.0 and not isinstance(module, nn.LSTM):
            return unsupported_reason(module, value)
        return None

    def kernel_effect(self, cfg: LayerConfig) -> KernelEffect:
        """Two kernels at the kept rank."""
        return KernelEffect(rank_ratio=cfg.rank_ratio)

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """The mildest rank ratio below 1 that some layer offers."""
        ranks = [r for r in offers.offered.get("rank_ratio", []) if r < 1.0]
        return [{"rank_ratio": max(ranks)}] if ranks else []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Each rank ratio below 1."""
        ranks = sorted((r for r in offers.offered.get("rank_ratio", []) if r < 1.0), reverse=True)
        return [(f"rank {r:g}", {"rank_ratio": r}) for r in ranks]

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'rank x2': the layers factorized."""
        count = sum(1 for c in configs if "rank_ratio" in c)
        return [f"rank x{count}"] if count else []
