"""Weight sharing (Deep Compression, Han et al. 2016): each layer's weights snap to a k-means
codebook of k shared values, stored as log2(k)-bit indices plus the fp32 codebook.

k-means is scikit-learn's, on the layer's weight values (1-D), started from k values spread
linearly between the smallest and largest weight (the initialization Deep Compression found
best: it keeps the few large weights that matter). While fine-tuning, a weight is its
centroid, so it stays shared; each centroid's gradient is the sum of its weights' gradients
(the paper's centroid update). The deployed layer is a plain dense float layer: sharing
changes the stored size, not the kernels, so no speed is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.compress._swap import bake_parametrized, leaves
from autocompress.compress.method import Applying, Method, Offers, Values, register
from autocompress.config import LayerConfig, Plan, Setting


def _check_values(value: Any) -> str | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == 0 or 2 <= value <= 256)
    ):
        return f"share_values must be 0 (off) or an integer from 2 to 256, got {value!r}"
    return None


def codebook(weight: Tensor, values: int) -> tuple[Tensor, Tensor]:
    """Cluster a weight's values into at most `values` shared ones (k-means, linear init).

    Args:
        weight: the layer's weight.
        values: the most shared values (fewer when the weight has fewer distinct values).

    Returns:
        (centroids, index): the fp32 codebook, and each weight's position in it (int64, the
        weight's shape).
    """
    from sklearn.cluster import KMeans

    flat = weight.detach().float().reshape(-1, 1).numpy().astype(np.float64)
    distinct = np.unique(flat)
    k = min(values, len(distinct))
    if k == len(distinct):  # already at most k values: each is its own centroid
        centroids = distinct
    else:
        init = np.linspace(flat.min(), flat.max(), k).reshape(-1, 1)
        kmeans = KMeans(n_clusters=k, init=init, n_init=1, random_state=0).fit(flat)
        centroids = kmeans.cluster_centers_.reshape(-1)
    centers = torch.tensor(centroids, dtype=torch.float32)
    index = torch.argmin((weight.detach().reshape(-1, 1).float() - centers).abs(), dim=1)
    return centers, index.reshape(weight.shape)


class SharedWeight(nn.Module):
    """A weight parametrization: every weight is its centroid; the centroids are trained."""

    def __init__(self, centroids: Tensor, index: Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids)
        self.register_buffer("index", index)

    def forward(self, original: Tensor) -> Tensor:
        """The shared weight (the stored original is not read)."""
        return self.centroids[self.index].to(original.dtype)


def share(model: nn.Module, settings: dict[str, int]) -> list[str]:
    """Snap the named layers' weights to shared values, in place; fine-tuning keeps them shared.

    Args:
        model: the model (modified in place).
        settings: layer name -> number of shared values; a name may be a container
            (a factorized layer): each Conv/Linear inside gets its own codebook.

    Returns:
        The Conv/Linear layers that were shared.
    """
    done = []
    for name, values in settings.items():
        for leaf_name, leaf in leaves(model, name):
            centroids, index = codebook(leaf.weight, values)
            parametrize.register_parametrization(leaf, "weight", SharedWeight(centroids, index))
            done.append(leaf_name)
    return done


def shared_bytes(weight: Tensor, values: int) -> int:
    """Bytes of a weight stored as `values` shared values: ceil(log2(values))-bit indices,
    packed, plus the fp32 codebook."""
    return math.ceil(weight.numel() * math.ceil(math.log2(values)) / 8) + 4 * values


@register
class Share(Method):
    """Weight sharing. Knob `share_values`: shared values per layer (2-256), 0 = off. Its
    own weight encoding: not with fewer weight bits or sparsity."""

    name = "share"
    stage = 40
    warm_start = 4
    settings = (Setting("share_values", 0, _check_values, levels=(256, 64, 16)),)
    smallest: ClassVar[dict[str, Any]] = {
        "share_values": lambda c: min((v for v in c if v), default=0)
    }

    def rule(self, values: Values) -> str | None:
        """Shared values are stored as indices into an fp32 codebook: no other encoding."""
        if values["share_values"] and (values["weight_bits"] < 32 or values["sparsity"] > 0):
            return "share_values needs weight_bits 32 and sparsity 0 (it is its own encoding)"
        return None

    def repair(self, values: dict[str, Any]) -> None:
        """With fewer weight bits or sparsity, the layer is not shared."""
        if values.get("weight_bits", 32) < 32 or values.get("sparsity", 0.0) > 0:
            values.pop("share_values", None)

    def apply(self, model: nn.Module, plan: Plan, context: Applying) -> None:
        """Snap each planned layer to its codebook (`share`)."""
        share(model, {n: c.share_values for n, c in plan.layers.items() if c.share_values})

    def bake(self, model: nn.Module) -> None:
        """Shared weights become plain weights (holding only the shared values)."""
        for module in model.modules():
            if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, SharedWeight) for p in module.parametrizations.weight
            ):
                bake_parametrized(module)

    def refusal(self, module: nn.Module, setting: str, value: Any) -> str | None:
        """No sharing that stores more bytes than the float weight (a tiny layer)."""
        weight = getattr(module, "weight", None)
        if setting != "share_values" or not value or not isinstance(weight, Tensor):
            return None
        if shared_bytes(weight, value) >= 4 * weight.numel():
            return f"{value} shared values of {weight.numel()} weights save no bytes"
        return None

    def runtime_kind(self, cfg: LayerConfig) -> str | None:
        """Shared layers run as dense float layers."""
        return "float (shared values: size only)" if cfg.share_values else None

    def stored_bytes(self, weight: Tensor, cfg: LayerConfig, *, table: bool) -> int | None:
        """Indices plus codebook (`shared_bytes`)."""
        return shared_bytes(weight, cfg.share_values) if cfg.share_values else None

    def uniform_levels(self, offers: Offers) -> list[dict[str, Any]]:
        """The mildest sharing (the most values) some layer offers."""
        values = [v for v in offers.offered.get("share_values", []) if v]
        return [{"share_values": max(values)}] if values else []

    def sweep_levels(self, offers: Offers) -> list[tuple[str, dict[str, Any]]]:
        """Each number of shared values, the most first."""
        values = sorted((v for v in offers.offered.get("share_values", []) if v), reverse=True)
        return [(f"share {v}", {"share_values": v}) for v in values]

    def summary(self, configs: Sequence[Values]) -> list[str]:
        """'shared x3': the layers with shared weights."""
        count = sum(1 for c in configs if c.get("share_values", 0))
        return [f"shared x{count}"] if count else []
