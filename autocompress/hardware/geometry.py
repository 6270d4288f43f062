"""Conv/Linear/LSTM layer geometries: what a layer is apart from its channel counts, and a
layer and input rebuilt from one (to time it alone, or to see how it factorizes)."""

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


def build_layer(geometry: dict[str, Any], cin: int, cout: int) -> nn.Module:
    """A layer of this geometry and these channel counts, on the current default device."""
    kind = geometry["type"]
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
    size = geometry["in_size"]
    if geometry["type"] in ("Linear", "LSTM"):  # an LSTM: batch first
        return torch.randn(batch, *size, cin)
    return torch.randn(batch, cin, *size)
