"""Embedding tables stored in int8 with one scale per row: what a realized plan puts where a
table is planned at 8 bits (`quantize_real.realize`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autocompress.compress.quantize import INT8_EPS


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one fp32 scale each; looked-up rows are
    dequantized, so the output equals the fake-quantized table's (`quantize_weight`, 8 bits).

    Args:
        weight: the int8 table (num_embeddings, embedding_dim).
        scale: one scale per row (num_embeddings,).
        padding_idx: as in `nn.Embedding` (kept for reference; lookups do not treat it apart).
    """

    def __init__(self, weight: Tensor, scale: Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.to(torch.int8))
        self.register_buffer("scale", scale.float())
        self.padding_idx = padding_idx

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize a float table symmetrically per row to [-127, 127]."""
        w = embedding.weight.detach().float()
        amax = w.abs().amax(dim=1)
        scale = (amax / 127).clamp(min=INT8_EPS)
        q = torch.clamp(torch.round(w / scale[:, None]), -127, 127)
        return cls(q, scale, embedding.padding_idx)

    def forward(self, ids: Tensor) -> Tensor:
        """The dequantized rows of `ids`: shape (*ids.shape, embedding_dim)."""
        return self.weight[ids].float() * self.scale[ids].unsqueeze(-1)
