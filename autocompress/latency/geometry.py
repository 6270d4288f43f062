"""Conv/Linear/LSTM layer and attention-core geometries: what a kernel is apart from its channel
counts, and a kernel and input rebuilt from one (to time it alone, or to see how it factorizes:
`factor_template`); `size_recorder` reads a layer's sizes off a forward pass.

An attention core is the part of self-attention between the projections: scores from the
queries and keys, their softmax and the values they weigh (one `scaled_dot_product_attention`
call). It has no weights, and pruning whole heads shrinks it: its "channels" are the heads kept
(`cin`) and the head size (`cout`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autocompress.compress.coupling import features
from autocompress.compress.factorize import factor_pair, matrix_shape
from autocompress.space.discover import layer_type


def geometry_of(module: nn.Module, in_size: Sequence[int]) -> dict[str, Any]:
    """A Conv/Linear/LSTM layer's geometry without its channel counts (see `Kernel.geometry`);
    an LSTM's `in_size` is its number of steps.

    The type is the torch class the layer derives from (a subclass runs that class's kernel);
    for a convolution that pads in its own `forward`, `in_size` is the padded input its kernel
    sees (`size_recorder` records it), so the layer rebuilt from it computes the same output.
    """
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "bias": module.bias is not None, "in_size": list(in_size)}
    if isinstance(module, nn.LSTM):
        return {
            "type": "LSTM",
            "bias": module.bias,
            "in_size": list(in_size),
            "layers": module.num_layers,
            "bidirectional": module.bidirectional,
        }
    return {
        "type": layer_type(module),
        "kernel": list(module.kernel_size),
        "stride": list(module.stride),
        "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
        "dilation": list(module.dilation),
        "depthwise": module.groups > 1 and module.groups == module.in_channels,
        "bias": module.bias is not None,
        "in_size": list(in_size),
    }


def attention_geometry(tokens: int, head_size: int) -> dict[str, Any]:
    """An attention core's geometry: self-attention over `tokens` positions, `head_size` wide
    per head; its kernels' cin is the heads kept and cout the head size."""
    return {"type": "Attention", "tokens": tokens, "head_size": head_size}


class AttentionCore(nn.Module):
    """Multi-head self-attention between the projections, as Hugging Face's sdpa attention runs
    it: input (batch, heads, tokens, head size) as queries, keys and values, with a padding
    mask (all positions kept: its time does not depend on its values)."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(1, 1, 1, tokens, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=self.mask)


def build_layer(geometry: dict[str, Any], cin: int, cout: int) -> nn.Module:
    """A layer of this geometry and these channel counts, on the current default device."""
    kind = geometry["type"]
    if kind == "Attention":
        return AttentionCore(geometry["tokens"])
    if kind == "Linear":
        return nn.Linear(cin, cout, bias=geometry["bias"])
    if kind == "LSTM":
        return nn.LSTM(
            cin,
            cout,
            geometry["layers"],
            bias=geometry["bias"],
            batch_first=True,
            bidirectional=geometry["bidirectional"],
        )
    conv = {"Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d}[kind]
    padding = geometry["padding"]
    return conv(
        cin,
        cout,
        tuple(geometry["kernel"]),
        tuple(geometry["stride"]),
        padding if isinstance(padding, str) else tuple(padding),
        tuple(geometry["dilation"]),
        groups=cin if geometry["depthwise"] else 1,
        bias=geometry["bias"],
    )


def example_input(geometry: dict[str, Any], cin: int, batch: int) -> torch.Tensor:
    """A random input of the right shape for `build_layer(geometry, cin, ...)`."""
    if geometry["type"] == "Attention":  # cin heads
        return torch.randn(batch, cin, geometry["tokens"], geometry["head_size"])
    size = geometry["in_size"]
    if geometry["type"] in ("Linear", "LSTM"):  # an LSTM: batch first
        return torch.randn(batch, *size, cin)
    return torch.randn(batch, cin, *size)


FactorTemplate = tuple[int, int, tuple[str, int], tuple[str, int]]


def factor_template(
    geometry: dict[str, Any], in_features: int, out_features: int
) -> FactorTemplate | None:
    """How `low_rank` splits a layer, independent of its channel counts and rank: the SVD
    matrix's rows per output channel and columns per input channel, and each half's geometry
    (JSON) and output size per channel. None where the layer cannot be factorized.

    Worked out on the meta device, at the dense channel counts and full rank.

    Args:
        geometry: the layer's geometry.
        in_features: its dense input channels.
        out_features: its dense output channels.

    Returns:
        (rows per output channel, columns per input channel, (first half's geometry JSON,
        output size per channel), (second half's ...)), or None.
    """
    with torch.device("meta"):
        module = build_layer(geometry, in_features, out_features)
        pair = factor_pair(module, 1.0)
        if pair is None:
            return None
        rows, cols = matrix_shape(module)
        x = example_input(geometry, in_features, 1)
        halves = []
        for part in pair:
            linear = isinstance(part, nn.Linear)
            half = geometry_of(part, list(x.shape[1:-1] if linear else x.shape[2:]))
            x = part(x)
            size = x[0].numel() // features(part)[1]
            halves.append((json.dumps(half, sort_keys=True), size))
    return rows // out_features, cols // in_features, halves[0], halves[1]


def kernel_input_size(
    conv: nn.Module, in_size: Sequence[int], out_size: Sequence[int]
) -> list[int]:
    """The input size a convolution's kernel sees, given the layer's input and output sizes.

    A plain convolution's kernel sees the layer's input, padded by `conv.padding`. A subclass
    may pad in its own `forward` first (TensorFlow's "same" padding, often one-sided); then
    its output is larger than its padding alone gives, and the kernel's input is the smallest
    one giving that output with `conv.padding`: the same output positions and multiply-adds.

    Args:
        conv: the Conv1d/Conv2d layer (or subclass).
        in_size: the spatial size of the input the layer was called with.
        out_size: the spatial size of its output.

    Returns:
        The spatial input size to rebuild the layer's kernel with (`build_layer`).
    """
    if isinstance(conv.padding, str):  # "same"/"valid": the module pads as nn.Conv pads
        return list(in_size)
    sizes = []
    for i, o, k, s, p, d in zip(
        in_size, out_size, conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True
    ):
        plain = (i + 2 * p - d * (k - 1) - 1) // s + 1
        sizes.append(i if plain == o else (o - 1) * s + d * (k - 1) + 1 - 2 * p)
    return sizes


def size_recorder(name: str, in_sizes: dict[str, list[int]], out_sizes: dict[str, int]) -> Any:
    """A forward hook for a Conv/Linear/LSTM layer that records, under `name`, its input size
    as `geometry_of` takes it (a convolution's: as its kernel sees it, `kernel_input_size`)
    and its output size per channel per sample (an LSTM: its steps)."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0]
        if isinstance(module, nn.LSTM):  # per channel and sample: one output per step
            steps = x.shape[1 if module.batch_first else 0] if x.dim() == 3 else x.shape[0]
            in_sizes[name], out_sizes[name] = [steps], steps
            return
        if isinstance(module, nn.Linear):
            in_sizes[name] = list(x.shape[1:-1])
        else:
            in_sizes[name] = kernel_input_size(module, x.shape[2:], output.shape[2:])
        out_sizes[name] = output[0].numel() // features(module)[1]

    return hook
