"""The single int8 and bf16 kernels the lookup tables time compute what their layer computes."""

from __future__ import annotations

import pytest
import torch

from autocompress.latency.geometry import build_layer
from autocompress.latency.kernel import BF16, FP32, INT8
from autocompress.latency.kernels import timed_kernel

CONV = {
    "type": "Conv2d",
    "kernel": [3, 3],
    "stride": [2, 2],
    "padding": [1, 1],
    "dilation": [1, 1],
    "depthwise": False,
    "bias": True,
    "in_size": [9, 9],
}
LINEAR = {"type": "Linear", "bias": True, "in_size": [5]}


def _dequantized(q: torch.Tensor) -> torch.Tensor:
    return (q.float() - 128) * 0.05


@pytest.mark.parametrize("geometry", [CONV, LINEAR, {**CONV, "depthwise": True}])
def test_int8_kernel_matches_its_float_layer_within_quantization_error(geometry) -> None:
    torch.manual_seed(0)
    cout = 8 if geometry.get("depthwise") else 12
    module, qx = timed_kernel(geometry, 8, cout, INT8, batch=2)
    assert qx.dtype == torch.uint8
    out = module(qx)
    assert out.dtype == torch.uint8
    # The same layer in float on the dequantized input: build_layer is seeded alike.
    torch.manual_seed(0)
    float_layer = build_layer(geometry, 8, cout)
    x = _dequantized(qx).reshape(2, 5, 8) if geometry["type"] == "Linear" else _dequantized(qx)
    with torch.no_grad():
        expected = float_layer(x).reshape(out.shape).clamp(-6.4, 6.35)
    error = (_dequantized(out) - expected).abs()
    assert error.mean() < 0.05 and error.max() <= 0.2  # one output step is 0.05


def test_float_formats_keep_the_layer_and_its_dtype() -> None:
    layer, x = timed_kernel(CONV, 4, 6, FP32, batch=3)
    assert layer(x).shape == (3, 6, 5, 5) and x.dtype == torch.float32
    layer, x = timed_kernel(CONV, 4, 6, BF16, batch=3)
    assert layer(x).dtype == torch.bfloat16


def test_int8_conv1d_has_no_table() -> None:
    conv1d = {**CONV, "type": "Conv1d", "kernel": [3], "stride": [1], "padding": [1]}
    conv1d.update(dilation=[1], in_size=[20])
    with pytest.raises(ValueError, match="no int8 kernel table for Conv1d"):
        timed_kernel(conv1d, 4, 4, INT8, batch=1)


def test_an_lstm_is_timed_whole_in_fp32_only() -> None:
    lstm = {"type": "LSTM", "bias": True, "in_size": [5], "layers": 1, "bidirectional": False}
    layer, x = timed_kernel(lstm, 4, 6, FP32, batch=3)
    assert isinstance(layer, torch.nn.LSTM) and x.shape == (3, 5, 4)
    assert layer(x)[0].shape == (3, 5, 6)
    with pytest.raises(ValueError, match="no int8 kernel table for LSTM"):
        timed_kernel(lstm, 4, 6, INT8, batch=1)
