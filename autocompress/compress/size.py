"""A fast count of a compressed model's bytes: quantized and sparse weights in their compact
encodings, everything else as `torch.save` writes it.

This is an estimate, not what a trial records: a trial's `size_bytes` is the size of the
model.pt2 it exports to (`compress.program.artifact_size_bytes`), which adds the program's
graph and zip headers (5-8 kB on digits-cnn) and stores some tensors deflated. The count
serves where the artifact cannot or need not be built: before fine-tuning, to skip plans far
over a size budget, and for models `torch.export` cannot capture.
"""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

from autocompress.compress._swap import QUANTIZABLE, leaves
from autocompress.compress.method import ordered, present
from autocompress.compress.quantize import quantized_weight_bytes
from autocompress.compress.sparsify import sparse_weight_bytes, weight_bytes_by_format
from autocompress.config import Plan


def size_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the size of the model as it is stored."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def weight_storage_bytes(weight: Tensor, bits: int, *, zero_points: bool = True) -> int:
    """Bytes of one weight at `bits`: its values in the smallest of dense, bitmask or CSR form
    (`sparsify.weight_bytes_by_format`) plus the quantization scales (`quantized_weight_bytes`).

    Args:
        weight: the baked weight (zeros in place); first dimension = output channels.
        bits: 32, 16, 8 or 4.
        zero_points: int8 stores an int64 zero point per channel (the PT2E graph does; an
            int8 embedding table does not).

    Returns:
        The byte count.
    """
    scales = (
        quantized_weight_bytes(weight, bits) - weight_bytes_by_format(weight, bits=bits)["dense"]
    )
    if bits == 8 and not zero_points:
        scales -= 8 * (weight.shape[0] if weight.dim() else 1)
    return sparse_weight_bytes(weight, bits=bits) + scales


def compressed_size_bytes(model: nn.Module, plan: Plan) -> int:
    """Bytes of `model` (a baked model: plain layers, zeros in place) stored the compact way.

    The fp32 bytes of every planned weight are replaced by its compact encoding: that of the
    latest method in `apply`'s order that stores it differently (`Method.stored_bytes`: int8
    values in their smallest sparse form, a sparse weight in CSR, ...); the rest (biases,
    BatchNorm, unplanned layers, container overhead) counts as `torch.save(state_dict)`
    writes it.

    Args:
        model: the baked compressed model (see `apply.bake`).
        plan: the plan it was built from.

    Returns:
        The byte count.
    """
    total = size_bytes(model)
    methods = [m for m in reversed(ordered())]
    for name, config in present(plan, model).layers.items():
        storing = [m for m in methods if m.active(config)]
        if not storing:
            continue
        for _, layer in leaves(model, name, QUANTIZABLE):
            weight = layer.weight.detach()
            table = isinstance(layer, nn.Embedding)
            for method in storing:
                stored = method.stored_bytes(weight, config, table=table)
                if stored is not None:
                    total += stored - weight.numel() * weight.element_size()
                    break
    return total
