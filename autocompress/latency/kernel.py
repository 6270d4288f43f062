"""The values the latency model is made of: a kernel a deployed model runs, and what is known
of one compressible layer of the dense model (`shapes.ModelShapes` works out both for a plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

# Formats a kernel computes in; see `compress.quantize_real.realize` for what deploys as what.
FP32, INT8, BF16 = "fp32", "int8", "bf16"
# The layer types (`discover.layer_type`: subclasses count as their torch class) that are
# kernels; embedding lookups are not modelled one by one (the whole-plan calibration has them).
KERNEL_TYPES = ("Linear", "Conv1d", "Conv2d", "LSTM")
UNMODELLED_TYPES = ("Embedding",)


@dataclass(frozen=True)
class Kernel:
    """One Conv/Linear/LSTM or attention-core call of a deployed model (an attention core's cin
    is the heads it keeps, its cout the head size: see `geometry.attention_geometry`).

    Args:
        geometry: JSON of everything but the channel counts (type, kernel size, stride, padding,
            dilation, groups, bias, input size); kernels with one geometry share a lookup table.
        cin: input channels (features).
        cout: output channels (features).
        out_elems: output elements per sample (cout times the output's spatial size).
        compute: FP32, INT8 or BF16.
    """

    geometry: str
    cin: int
    cout: int
    out_elems: int
    compute: str


@dataclass(frozen=True)
class LayerShape:
    """What the predictor knows of one compressible layer of the dense model.

    Args:
        name: module name.
        geometry: the layer's geometry (see `Kernel.geometry`), as a dict.
        in_features: dense input channels.
        out_features: dense output channels.
        group: the coupling group that prunes its outputs, or None.
        in_group: the coupling group whose pruning shrinks its inputs, or None.
        in_per_channel: input features removed per channel pruned from `in_group` (1 for a
            convolution, the spatial size for a Linear after a flatten).
        out_size: the output's size per channel per sample (spatial positions, or tokens).
        splittable: whether compress can replace the layer by smaller ones at all (`low_rank`'s
            two halves, an LSTM unrolled into Linears); both refuse subclasses of the torch
            classes, whose `forward` may compute something more (e.g. pad the input).
    """

    name: str
    geometry: dict[str, Any]
    in_features: int
    out_features: int
    group: str | None
    in_group: str | None
    in_per_channel: int
    out_size: int
    splittable: bool = True


def splittable(module: nn.Module) -> bool:
    """See `LayerShape.splittable`: `compress.lstm` unrolls a plain `nn.LSTM` only, and at full
    rank only the kind of layer can make `low_rank` refuse one."""
    from autocompress.compress.factorize import unsupported_reason

    if isinstance(module, nn.LSTM):
        return type(module) is nn.LSTM
    return unsupported_reason(module, 1.0) is None
