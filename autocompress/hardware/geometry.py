"""Conv/Linear/LSTM layer and attention-core geometries: what a kernel is apart from its channel
counts, and a kernel and input rebuilt from one (to time it alone, or to see how it factorizes).

An attention core is the part of self-attention between the projections: scores from the
queries and keys, their softmax and the values they weigh (one `scaled_dot_product_attention`
call). It has no weights, and pruning whole heads shrinks it: its "channels" are the heads kept
(`cin`) and the head size (`cout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def geometry_of(module: nn.Module, in_size: Sequence[int]) -> dict[str, Any]:
    """A Conv/Linear/LSTM layer's geometry without its channel counts (see `Kernel.geometry`);
    an LSTM's `in_size` is its number of steps."""
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
        "type": type(module).__name__,
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
