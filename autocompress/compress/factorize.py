"""Low-rank factorization: a Linear/Conv layer replaced in place by two physically smaller ones.

The replacement is an `nn.Sequential` of two ordinary Conv/Linear modules, so torch.export, ONNX
and the quantizers see standard layers.

Measured here (torch 2.13 CPU, 1 thread, factorized/dense time as the median of paired per-round
ratios, 2-4 runs on a shared 2-core machine; `w` = weights kept vs the dense layer):
- Linear 1024->1024, b1: rank 0.125 (w 0.25) 0.46x; 0.25 (w 0.5) 0.76x; 0.5 (w 1.0) 1.20x.
- Linear 1024->1024, b32: rank 0.125 0.25x; 0.25 0.49x; 0.5 0.97x.
- Conv2d 64->64 3x3 16x16 b1, spatial: 0.25 (r48, w 0.5) 0.58x; 0.5 (r96, w 1.0) 1.07x.
- Conv2d 64->64 3x3 16x16 b1, channel: 0.25 (r16, w 0.28) 0.54-0.58x; 0.5 (r32, w 0.56) 0.73-0.77x.
- Same conv b1, equal weights: w 0.28 spatial 0.41x vs channel 0.54x; w 0.5 0.58x vs 0.73x.
- Same conv b32 (noisy, range of 4 runs): spatial 0.25 0.92-1.12x, 0.5 1.4-2.0x; channel 0.25
  0.20-0.36x, 0.5 0.36-1.2x; equal weights w 0.28 spatial 0.26-0.44x vs channel 0.20-0.36x.
- Accuracy before fine-tuning, digits-resnet (top1 0.991), its 11 3x3 convs with >= 32 channels at
  equal weights: w 0.5 spatial 0.989 vs channel 0.963; w 0.25 spatial 0.974 vs channel 0.296.
So spatial SVD is the default for kxk convs: at equal weights it is faster at batch 1 and far more
accurate; channel SVD (`conv_svd="channel"`) is faster at batch 32, where 3x1/1x3 convs are slow.
A rank ratio pays off in weights below ~0.5 of full rank for square layers and spatial SVD.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from autocompress.compress._swap import swap_module
from autocompress.errors import PlanWarning

ConvSVD = Literal["spatial", "channel"]

# The decomposition for Conv2d kernels larger than 1x1, chosen from the figures above.
DEFAULT_CONV_SVD: ConvSVD = "spatial"

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def rank_for(module: nn.Module, rank_ratio: float, *, conv_svd: ConvSVD = DEFAULT_CONV_SVD) -> int:
    """The rank `low_rank` keeps for a layer: `max(1, round(rank_ratio * full_rank))`.

    Args:
        module: an `nn.Linear`, `nn.Conv1d` or `nn.Conv2d`.
        rank_ratio: the fraction of the full rank to keep, > 0; 1.0 keeps the full rank.
        conv_svd: "spatial" (kh x 1 then 1 x kw) or "channel" (kh x kw then 1x1) for Conv2d
            kernels larger than 1x1; 1x1 Conv2d, Conv1d and Linear always use channel SVD.

    Returns:
        The kept rank, from 1 to the full rank of the decomposition used for this layer.

    Raises:
        ValueError: `rank_ratio` is not a positive finite number.
        TypeError: the layer is not an `nn.Linear`, `nn.Conv1d` or `nn.Conv2d`.
    """
    ok = isinstance(rank_ratio, int | float) and not isinstance(rank_ratio, bool)
    if not (ok and math.isfinite(rank_ratio) and rank_ratio > 0):
        raise ValueError(f"rank_ratio must be a positive number, got {rank_ratio!r}")
    if not isinstance(module, _SUPPORTED):
        raise TypeError(f"cannot factorize a {type(module).__name__}")
    return _kept_rank(min(matrix_shape(module, conv_svd)), rank_ratio)


def _kept_rank(full: int, rank_ratio: float) -> int:
    return min(full, max(1, round(rank_ratio * full)))


def smaller_rank(rows: int, cols: int, rank_ratio: float) -> int | None:
    """The rank a rows x cols layer matrix keeps at `rank_ratio` (as `rank_for` counts it), or
    None where that rank would not leave fewer weights than the matrix (then `low_rank`
    refuses the layer). Full rank (ratio 1.0) is always returned: it is how exactness is checked.

    Args:
        rows: the matrix's rows (output side; see `matrix_shape`).
        cols: its columns.
        rank_ratio: the fraction of the full rank to keep.
    """
    rank = _kept_rank(min(rows, cols), rank_ratio)
    if rank_ratio < 1.0 and rank * (rows + cols) >= rows * cols:
        return None
    return rank


def unsupported_reason(
    module: nn.Module, rank_ratio: float, *, conv_svd: ConvSVD = DEFAULT_CONV_SVD
) -> str | None:
    """Why `low_rank(module, rank_ratio)` returns None, in words; None when it does not.

    Args:
        module: the layer.
        rank_ratio: the fraction of the full rank to keep.
        conv_svd: the decomposition for Conv2d kernels larger than 1x1.

    Returns:
        A short reason, or None when the layer can be factorized at this ratio.
    """
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolutions are not supported"
    # Exact types only: subclasses (e.g. attention's out_proj) are often read by weight directly.
    if type(module) not in _SUPPORTED:
        return (
            f"it is a {type(module).__name__}, not a plain nn.Linear, nn.Conv1d or nn.Conv2d "
            "(a subclass's forward may do more than the plain layer, e.g. pad its input)"
        )
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.groups != 1:
            return f"grouped/depthwise convolutions (groups={module.groups}) are not supported"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} is not supported (only 'zeros')"
    rows, cols = matrix_shape(module, conv_svd)
    rank = rank_for(module, rank_ratio, conv_svd=conv_svd)
    if smaller_rank(rows, cols, rank_ratio) is None:
        return (
            f"rank {rank} of {min(rows, cols)} keeps {rank * (rows + cols)} weights, "
            f"not fewer than the layer's {rows * cols}"
        )
    return None


def factor_pair(
    module: nn.Module, rank_ratio: float, *, conv_svd: ConvSVD = DEFAULT_CONV_SVD
) -> tuple[nn.Module, nn.Module] | None:
    """The shapes `low_rank` would build: the two layers, weights left at their initial values.

    Cheap enough to call on the meta device (`with torch.device("meta"):`), which is how the
    latency predictor learns a plan's layers without building the plan.

    Args:
        module: the layer (its weights are not read).
        rank_ratio: the fraction of the full rank to keep.
        conv_svd: the decomposition for Conv2d kernels larger than 1x1.

    Returns:
        (first, second), or None where `low_rank` returns None.
    """
    if unsupported_reason(module, rank_ratio, conv_svd=conv_svd) is not None:
        return None
    return _empty_pair(module, rank_for(module, rank_ratio, conv_svd=conv_svd), conv_svd)


def low_rank(
    module: nn.Module, rank_ratio: float, *, conv_svd: ConvSVD = DEFAULT_CONV_SVD
) -> nn.Sequential | None:
    """Two smaller layers whose composition approximates `module` by a truncated SVD.

    Linear(in, out) -> Linear(in, r, bias=False), Linear(r, out). Conv2d with a kernel larger
    than 1x1 -> spatial SVD (Tai et al. 2016): Conv (kh x 1) in->r with the vertical stride,
    padding and dilation, then Conv (1 x kw) r->out with the horizontal ones; or, with
    `conv_svd="channel"`, Conv (kh x kw) in->r then 1x1 r->out. 1x1 Conv2d and Conv1d: channel
    SVD (Conv k in->r with the stride, padding and dilation, then 1 r->out). The bias, if any,
    goes on the second layer.

    Args:
        module: the layer to factorize (left unchanged).
        rank_ratio: the fraction of the full rank to keep (see `rank_for`). At 1.0 the full rank
            is kept even where that is larger than the layer: it reproduces the layer exactly.
        conv_svd: the decomposition for Conv2d kernels larger than 1x1.

    Returns:
        The replacement, in the layer's dtype, device and training mode; None when the layer
        cannot be factorized or the kept rank would not make it smaller (see `unsupported_reason`).
    """
    pair = factor_pair(module, rank_ratio, conv_svd=conv_svd)
    if pair is None:
        return None
    first, second = pair
    rank = first.weight.shape[0]
    weight = module.weight.detach()
    # float64: the product of the factors then matches the layer to ~1e-7 at full rank.
    u, s, vh = torch.linalg.svd(_as_matrix(module, conv_svd).double(), full_matrices=False)
    # sqrt(S) on both sides keeps the two factors on a similar scale for fine-tuning.
    root = s[:rank].sqrt()
    out_side = (u[:, :rank] * root).to(weight.dtype)  # (out [* kw], r)
    in_side = (root[:, None] * vh[:rank]).to(weight.dtype)  # (r, in [* kh * kw])
    kw = module.kernel_size[1] if _is_spatial(module, conv_svd) else 1
    with torch.no_grad():
        first.weight.copy_(in_side.reshape(first.weight.shape))
        out_w = out_side.reshape(-1, kw, rank).transpose(1, 2)
        second.weight.copy_(out_w.reshape(second.weight.shape))
        if module.bias is not None:
            second.bias.copy_(module.bias.detach())
    pair = nn.Sequential(first, second).to(device=weight.device, dtype=weight.dtype)
    return pair.train(module.training)


def factorize(
    model: nn.Module, rank_ratios: Mapping[str, float], *, conv_svd: ConvSVD = DEFAULT_CONV_SVD
) -> list[str]:
    """Replace each named layer with its low-rank pair, in place.

    A layer that cannot be factorized (see `unsupported_reason`), a name the model does not
    have, or a layer whose weight is shared with another (factorizing it would add weights)
    is left unchanged with a warning naming it and why.

    Args:
        model: the model to modify in place.
        rank_ratios: layer name (as in `named_modules()`) -> fraction of the full rank to keep;
            names with a ratio >= 1.0 are left untouched.
        conv_svd: the decomposition for Conv2d kernels larger than 1x1.

    Returns:
        The names of the layers actually factorized, in the mapping's order.

    Raises:
        ValueError: a ratio is not a positive number (checked before anything changes).
    """
    for name, ratio in rank_ratios.items():
        ok = isinstance(ratio, int | float) and not isinstance(ratio, bool)
        if not (ok and math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"rank ratio for layer {name!r} must be a positive number: {ratio!r}")
    shared = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    done: list[str] = []
    for name, ratio in rank_ratios.items():
        if ratio >= 1.0:
            continue
        try:
            module = model.get_submodule(name)
        except AttributeError:
            warnings.warn(
                f"not factorizing {name!r}: the model has no such layer", PlanWarning, stacklevel=2
            )
            continue
        weight = getattr(module, "weight", None)
        reason = unsupported_reason(module, ratio, conv_svd=conv_svd)
        if reason is None and isinstance(weight, nn.Parameter) and shared[id(weight)] > 1:
            reason = "its weight is shared with another layer (tied)"
        replacement = None if reason else low_rank(module, ratio, conv_svd=conv_svd)
        if replacement is None:
            warnings.warn(f"not factorizing {name!r}: {reason}", PlanWarning, stacklevel=2)
            continue
        swap_module(model, name, replacement)
        done.append(name)
    return done


def _is_spatial(module: nn.Module, conv_svd: ConvSVD) -> bool:
    return (
        conv_svd == "spatial"
        and isinstance(module, nn.Conv2d)
        and tuple(module.kernel_size) != (1, 1)
    )


def matrix_shape(module: nn.Module, conv_svd: ConvSVD = DEFAULT_CONV_SVD) -> tuple[int, int]:
    """(rows, cols) of the matrix the SVD factorizes: rows on the output side (out channels
    times the kernel width for spatial SVD), cols on the input side."""
    w = module.weight
    if _is_spatial(module, conv_svd):
        out, cin, kh, kw = w.shape
        return out * kw, cin * kh
    return w.shape[0], w[0].numel()


def _as_matrix(module: nn.Module, conv_svd: ConvSVD) -> torch.Tensor:
    w = module.weight.detach()
    if _is_spatial(module, conv_svd):
        # M[(n, j), (c, i)] = W[n, c, i, j]: a rank-1 term is a (kh x 1) filter then a (1 x kw) one.
        return w.permute(0, 3, 1, 2).reshape(matrix_shape(module, conv_svd))
    return w.reshape(w.shape[0], -1)


def _empty_pair(module: nn.Module, rank: int, conv_svd: ConvSVD) -> tuple[nn.Module, nn.Module]:
    """The two layers of the replacement, with the right shapes and geometry, weights unset."""
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        return (
            nn.Linear(module.in_features, rank, bias=False),
            nn.Linear(rank, module.out_features, bias=bias),
        )
    cin, cout = module.in_channels, module.out_channels
    if not _is_spatial(module, conv_svd):
        conv = nn.Conv1d if isinstance(module, nn.Conv1d) else nn.Conv2d
        geometry = (module.kernel_size, module.stride, module.padding, module.dilation)
        return conv(cin, rank, *geometry, bias=False), conv(rank, cout, 1, bias=bias)
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    # 'same'/'valid' pad each dimension on its own, so the string carries over to both halves.
    pad_v = pad_h = module.padding
    if not isinstance(module.padding, str):
        pad_v, pad_h = (module.padding[0], 0), (0, module.padding[1])
    first = nn.Conv2d(cin, rank, (kh, 1), (sh, 1), pad_v, (dh, 1), bias=False)
    return first, nn.Conv2d(rank, cout, (1, kw), (1, sw), pad_h, (1, dw), bias=bias)
