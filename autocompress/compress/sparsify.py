"""Weight sparsity: magnitude masks held through fine-tuning, exact storage sizes, a CSR Linear.

Masks live in `torch.nn.utils.parametrize`, so the optimizer may touch the stored weight but the
effective weight keeps its zeros. Unstructured and N:M sparsity are speed only where a kernel exists
and was measured (`faster_as_sparse`); elsewhere they count as size (`sparse_weight_bytes`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.compress._swap import bake_parametrized, leaves
from autocompress.errors import PlanWarning
from autocompress.hardware.timing import measure_latency

PATTERNS = ("unstructured", "2:4")

# (in_features, out_features, density percent, batch, threads) -> sparse measured faster.
_FASTER_CACHE: dict[tuple[int, int, int, int, int], bool] = {}


def _parse_n_m(pattern: str) -> tuple[int, int] | None:
    """(n, m) for an "n:m" pattern, None for "unstructured"; ValueError for anything else."""
    if pattern == "unstructured":
        return None
    n_text, sep, m_text = pattern.partition(":")
    if sep and n_text.isdigit() and m_text.isdigit() and 0 < int(n_text) < int(m_text):
        return int(n_text), int(m_text)
    raise ValueError(
        f'unknown sparsity pattern {pattern!r}: use "unstructured" or "n:m" like "2:4"'
    )


def pattern_refusal(weight: Tensor, pattern: str) -> str | None:
    """Why an n:m `pattern` cannot mask `weight`, in words; None when it can (or is unstructured).

    Args:
        weight: a Conv/Linear weight; n:m groups run along its input dimension.
        pattern: "unstructured" or "n:m".

    Returns:
        A short reason, or None.
    """
    n_m = _parse_n_m(pattern)
    if n_m is None:
        return None
    reduced = weight[0].numel() if weight.dim() > 1 else weight.numel()
    if reduced % n_m[1]:
        return (
            f"pattern {pattern} needs the input dimension to be a multiple of {n_m[1]}, "
            f"got {reduced}"
        )
    return None


def magnitude_mask(
    weight: Tensor, sparsity: float, pattern: str, *, name: str = "weight"
) -> Tensor:
    """The keep-mask that zeroes the smallest-magnitude weights.

    Args:
        weight: a layer's weight; dim 0 is the output dimension (Linear and Conv alike).
        sparsity: fraction to zero, in [0, 1). "unstructured" zeroes exactly
            `round(sparsity * numel)` weights (ties broken by position); "n:m" needs
            `sparsity == 1 - n/m` (0.5 for "2:4").
        pattern: "unstructured", or "n:m": in each group of m consecutive weights along the
            input dimension (for a conv: in_channels*kh*kw flattened per output channel),
            keep the n largest |w|.
        name: what to call the weight in error messages (the layer name).

    Returns:
        A bool tensor of `weight`'s shape, True where the weight is kept.

    Raises:
        ValueError: sparsity out of range, an unknown pattern, an n:m sparsity other than
            1 - n/m, or an input dimension that is not a multiple of m.
    """
    n_m = _parse_n_m(pattern)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"{name}: sparsity must be in [0, 1), got {sparsity}")
    magnitude = weight.detach().abs()
    if n_m is None:
        zeroed = round(sparsity * weight.numel())
        order = torch.argsort(magnitude.flatten(), stable=True)
        keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        keep[order[:zeroed]] = False
        return keep.view_as(weight)
    n, m = n_m
    if not math.isclose(sparsity, 1 - n / m):
        raise ValueError(
            f"{name}: pattern {pattern} zeroes exactly {1 - n / m:g} of the weights, "
            f"got sparsity {sparsity}"
        )
    refused = pattern_refusal(weight, pattern)
    if refused is not None:
        raise ValueError(f"{name}: {refused}")
    rows = weight.shape[0] if weight.dim() > 1 else 1
    reduced = weight.numel() // rows
    groups = magnitude.reshape(rows, reduced // m, m)
    top = torch.topk(groups, n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.view_as(weight)


class _Mask(nn.Module):
    """A parametrization: the weight times a fixed bool mask (the mask is saved as a buffer)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def _existing_mask(layer: nn.Module) -> _Mask | None:
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, _Mask)), None)


def sparsify(model: nn.Module, settings: Mapping[str, tuple[float, str]]) -> list[str]:
    """Mask the smallest weights of the named layers in place; fine-tuning keeps the zeros.

    A planned name may be a Conv/Linear or a container of them (a factorized layer): each
    Conv/Linear inside is masked. A name is all or nothing: if any of its layers cannot take
    the pattern, none of them is changed. Masking a layer again replaces its mask.

    Args:
        model: the model to sparsify (modified in place).
        settings: layer name -> (sparsity, pattern); names with sparsity 0 are skipped.

    Returns:
        The names that were masked. A name that could not be (missing, no Conv/Linear inside,
        an n:m pattern that does not divide its input dimension) is left unchanged and a
        warning names it and says why.
    """
    handled: list[str] = []
    for name, (sparsity, pattern) in settings.items():
        if sparsity <= 0:
            continue
        try:
            layers = list(leaves(model, name))
            if not layers:
                raise ValueError(f"{name}: no Conv/Linear layer inside to sparsify")
            masks = [
                (layer, magnitude_mask(layer.weight, sparsity, pattern, name=leaf))
                for leaf, layer in layers
            ]
        except (AttributeError, ValueError) as error:
            reason = f"no such layer ({error})" if isinstance(error, AttributeError) else error
            warnings.warn(f"sparsity not applied to {name!r}: {reason}", PlanWarning, stacklevel=2)
            continue
        for layer, mask in masks:
            existing = _existing_mask(layer)
            if existing is not None:
                existing.mask = mask
            else:
                parametrize.register_parametrization(layer, "weight", _Mask(mask))
        handled.append(name)
    return handled


def bake(model: nn.Module) -> None:
    """Make the masked weights plain Parameters with exact zeros; masks stop being enforced.

    Args:
        model: a model `sparsify` was applied to (modified in place); other parametrizations
            on a masked weight are baked in too.
    """
    for module in model.modules():
        if _existing_mask(module) is not None:
            bake_parametrized(module)


def weight_bytes_by_format(weight: Tensor, *, bits: int = 32) -> dict[str, int]:
    """The bytes `weight` takes in each storage format, from its count of nonzeros.

    - dense: ceil(numel * bits / 8)
    - bitmask: ceil(numel / 8) + ceil(nnz * bits / 8) (one bit per weight, then the nonzeros)
    - csr: ceil(nnz * bits / 8) values + 4 * nnz (int32 column indices)
      + 8 * (rows + 1) (int64 row pointers), rows = shape[0] (1 for a 0-d tensor)

    Args:
        weight: the (masked or baked) weight.
        bits: bits per stored value.

    Returns:
        {"dense": ..., "bitmask": ..., "csr": ...}.
    """
    numel = weight.numel()
    nnz = int(torch.count_nonzero(weight.detach()))
    rows = weight.shape[0] if weight.dim() else 1
    values = math.ceil(nnz * bits / 8)
    return {
        "dense": math.ceil(numel * bits / 8),
        "bitmask": math.ceil(numel / 8) + values,
        "csr": values + 4 * nnz + 8 * (rows + 1),
    }


def sparse_weight_bytes(weight: Tensor, *, bits: int = 32) -> int:
    """The bytes `weight` takes in the smallest of dense, bitmask and CSR storage.

    Args:
        weight: the (masked or baked) weight.
        bits: bits per stored value.

    Returns:
        min(weight_bytes_by_format(weight, bits=bits).values()); see there for the formulas.
    """
    return min(weight_bytes_by_format(weight, bits=bits).values())


class SparseLinear(nn.Module):
    """A deploy-time Linear whose weight is stored and multiplied as CSR.

    The state_dict holds `crow_indices` (int64), `col_indices` (int32), `values` and `bias`, so
    its saved size is the "csr" figure of `weight_bytes_by_format`. The kernel wants both index
    arrays in one dtype (int32 measured faster), so a CSR tensor is built once and cached.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        crow_indices: Tensor,
        col_indices: Tensor,
        values: Tensor,
        bias: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("crow_indices", crow_indices.to(torch.int64))
        self.register_buffer("col_indices", col_indices.to(torch.int32))
        self.register_buffer("values", values)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self._csr: Tensor | None = None
        self._csr_key: tuple[int, ...] = ()

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """The same layer with its zero weights dropped.

        Args:
            linear: a Linear (plain or masked); its effective weight is read.

        Returns:
            A SparseLinear computing the same outputs.
        """
        with warnings.catch_warnings():
            # torch notes once that CSR is beta; the note is for torch's users, not ours.
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            csr = linear.weight.detach().to_sparse_csr()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(
            linear.in_features,
            linear.out_features,
            csr.crow_indices().clone(),
            csr.col_indices(),
            csr.values().clone(),
            bias,
        )

    def _weight(self) -> Tensor:
        parts = (self.crow_indices, self.col_indices, self.values)
        # Tensors replaced (load, .to()) or written in place (copy_) invalidate the cache.
        key = tuple(v for t in parts for v in (t.data_ptr(), t._version))
        if self._csr is None or key != self._csr_key:
            self._csr = torch.sparse_csr_tensor(
                self.crow_indices.to(torch.int32),
                self.col_indices,
                self.values,
                (self.out_features, self.in_features),
                check_invariants=False,
            )
            self._csr_key = key
        return self._csr

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).t()
        weight = self._weight()
        if self.bias is None:
            out = torch.sparse.mm(weight, flat)
        else:
            out = torch.sparse.addmm(self.bias.unsqueeze(1), weight, flat)
        return out.t().reshape(*x.shape[:-1], self.out_features)

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A saved layer may keep a different number of nonzeros: take its arrays' shapes.
        for key in ("crow_indices", "col_indices", "values"):
            incoming, current = state_dict.get(prefix + key), self._buffers[key]
            if (
                isinstance(incoming, Tensor)
                and current is not None
                and incoming.shape != current.shape
            ):
                self._buffers[key] = current.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # The cached kernel tensor is rebuilt on first use; pickles and copies leave it out.
        return {**self.__dict__, "_csr": None, "_csr_key": ()}

    def extra_repr(self) -> str:
        density = self.values.numel() / max(1, self.in_features * self.out_features)
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, density={density:.3f}"


def faster_as_sparse(linear: nn.Linear, batch_size: int, *, threads: int = 1) -> bool:
    """Whether a SparseLinear beats the dense Linear for this shape and batch, measured here.

    Times both interleaved with the timing protocol (a short run) and caches the answer per
    (in_features, out_features, density percent, batch_size, threads) for this process.

    Args:
        linear: the (masked or baked) Linear.
        batch_size: rows per call.
        threads: torch intra-op threads while timing.

    Returns:
        True only if the sparse layer's median paired time ratio to dense is below 0.95.
    """
    weight = linear.weight.detach()
    density = round(100 * int(torch.count_nonzero(weight)) / max(1, weight.numel()))
    key = (linear.in_features, linear.out_features, density, batch_size, threads)
    if key not in _FASTER_CACHE:
        dense = nn.Linear(
            linear.in_features, linear.out_features, linear.bias is not None, dtype=weight.dtype
        )
        with torch.no_grad():
            dense.weight.copy_(weight)
            if linear.bias is not None:
                dense.bias.copy_(linear.bias)
        sparse = SparseLinear.from_dense(dense)
        x = torch.randn(batch_size, linear.in_features, dtype=weight.dtype)
        with torch.no_grad():
            measured = measure_latency(
                lambda: sparse(x), lambda: dense(x), threads=threads, rounds=5, warmup_s=0.1
            )
        _FASTER_CACHE[key] = measured.ratio is not None and measured.ratio < 0.95
    return _FASTER_CACHE[key]
