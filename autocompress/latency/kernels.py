"""Single Conv/Linear kernels in each number format a plan deploys in, to time them alone.

The latency predictor's lookup tables time every layer geometry the search space can produce.
A layer realized as int8 runs a oneDNN quantized kernel (`onednn::qconv_pointwise`,
`onednn::qlinear_pointwise`, the ones inductor lowers X86InductorQuantizer's graphs to),
whose time is not a fixed fraction of the fp32 kernel's: a small int8 convolution costs more
than its fp32 twin, a wide one half as much. So each format gets its own table, timed
eagerly on these kernels (no compile): weights prepacked once, the input already quantized
(uint8, channels-last) as it arrives inside a compiled int8 graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autocompress.latency.geometry import build_layer, example_input
from autocompress.latency.kernel import BF16, FP32, INT8

# Any fixed scales do: kernel time does not depend on the values quantized.
_X_SCALE, _X_ZERO = 0.05, 128


class _Int8Conv(nn.Module):
    """A static-int8 convolution: uint8 activations, per-channel int8 weights, uint8 out."""

    def __init__(self, conv: nn.Conv2d, x_shape: list[int]) -> None:
        super().__init__()
        weight = conv.weight.detach()
        self.w_scale = weight.abs().amax(dim=(1, 2, 3)).clamp(min=1e-8) / 127
        self.w_zero = torch.zeros(weight.shape[0], dtype=torch.int64)
        w_int8 = torch.round(weight / self.w_scale[:, None, None, None]).to(torch.int8)
        if isinstance(conv.padding, str):
            raise ValueError("string padding has no int8 kernel table")
        self.conv_args = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.packed = torch.ops.onednn.qconv_prepack(
            w_int8, self.w_scale, _X_SCALE, _X_ZERO, *self.conv_args, x_shape
        )

    def forward(self, qx: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qconv_pointwise(
            qx, _X_SCALE, _X_ZERO, self.packed, self.w_scale, self.w_zero, self.bias,
            *self.conv_args, _X_SCALE, _X_ZERO, torch.uint8, "none", [], "",
        )  # fmt: skip


class _Int8Linear(nn.Module):
    """A static-int8 Linear on a 2-D uint8 input (rows = batch x positions), uint8 out."""

    def __init__(self, linear: nn.Linear, rows: int) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.w_scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.w_zero = torch.zeros(weight.shape[0], dtype=torch.int64)
        w_int8 = torch.round(weight / self.w_scale[:, None]).to(torch.int8)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.packed = torch.ops.onednn.qlinear_prepack(w_int8, [rows, weight.shape[1]])

    def forward(self, qx: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(
            qx, _X_SCALE, _X_ZERO, self.packed, self.w_scale, self.w_zero, self.bias,
            _X_SCALE, _X_ZERO, torch.uint8, "none", [], "",
        )  # fmt: skip


def _quantized(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(x / _X_SCALE) + _X_ZERO, 0, 255).to(torch.uint8)


def timed_kernel(
    geometry: dict[str, Any], cin: int, cout: int, compute: str, batch: int
) -> tuple[nn.Module, torch.Tensor]:
    """A layer of this geometry running in `compute`, and an input to time it on.

    Args:
        geometry: the layer's geometry (see `kernel.Kernel.geometry`), as a dict.
        cin: input channels.
        cout: output channels.
        compute: FP32 (eager float), BF16 (bfloat16 weights and input) or INT8 (oneDNN
            quantized kernel with prepacked weights, uint8 input).
        batch: the batch size.

    Returns:
        (module, input): `module(input)` is the kernel call to time.

    Raises:
        ValueError: no kernel of this format for this geometry (int8 Conv1d, which `realize`
            keeps float, or string padding).
    """
    layer = build_layer(geometry, cin, cout).eval()
    x = example_input(geometry, cin, batch)
    if compute == FP32:
        return layer, x
    if compute == BF16:
        return layer.to(torch.bfloat16), x.to(torch.bfloat16)
    if compute != INT8:
        raise ValueError(f"unknown compute format {compute!r}")
    if isinstance(layer, nn.Linear):
        rows = x.numel() // cin
        return _Int8Linear(layer, rows), _quantized(x.reshape(rows, cin))
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"no int8 kernel table for {type(layer).__name__}")
    qx = _quantized(x).contiguous(memory_format=torch.channels_last)
    return _Int8Conv(layer, list(qx.shape)), qx
