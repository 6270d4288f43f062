"""Attention cores: the part of self-attention between its projections, which no Conv/Linear
kernel covers: the scores from queries and keys, their softmax, and the values they weigh
(one `scaled_dot_product_attention` call per block).

Its work grows with the heads kept and with the square of the tokens, so pruning whole heads
shrinks it as it shrinks the query/key/value projections. In all-MiniLM-L6-v2 at 128 tokens
one core takes 0.39 ms at 12 heads and 0.19 ms at 6 (fp32, 1 thread): more than the block's
four attention projections in int8 together (0.24 ms), two thirds of all its int8 Linears.
Without it the predictor credited pruning heads with too little (plans keeping half the
heads predicted 8-19% slow). The profile times it per kept head count
(`geometry.AttentionCore`), like any kernel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autocompress.latency.geometry import attention_geometry


@dataclass(frozen=True)
class AttentionShape:
    """One self-attention module of the dense model.

    Args:
        name: the attention module's name.
        group: the coupling group that prunes its query/key/value projections (in whole
            heads), or None when its width is fixed.
        heads: dense number of heads.
        head_size: features per head.
        tokens: positions it attends over (the example input's sequence length).
    """

    name: str
    group: str | None
    heads: int
    head_size: int
    tokens: int

    def geometry_json(self) -> str:
        """Its kernels' geometry (see `kernel.Kernel.geometry`)."""
        return json.dumps(attention_geometry(self.tokens, self.head_size), sort_keys=True)


def find_attention(
    heads: dict[str, tuple[Any, int]], groups: dict[str, str | None], out_sizes: dict[str, int]
) -> list[AttentionShape]:
    """The attention modules of a model, from their projections.

    Args:
        heads: `compress.prune.attention_heads(model)`: ``{projection: (module, head size)}``.
        groups: each Linear projection's coupling group (None where it has none); projections
            missing from it (not compressible layers) are ignored.
        out_sizes: each projection's output size per channel (its tokens).

    Returns:
        One AttentionShape per attention module, in the order its projections come.
    """
    found: dict[str, AttentionShape] = {}
    for projection, (module, head_size) in heads.items():
        name = projection.rpartition(".")[0]
        if projection not in groups or name in found:
            continue
        siblings = [p for p in heads if p.rpartition(".")[0] == name and p in groups]
        group = next((groups[p] for p in siblings if groups[p] is not None), None)
        found[name] = AttentionShape(
            name=name,
            group=group,
            heads=int(module.num_attention_heads),
            head_size=head_size,
            tokens=out_sizes[projection],
        )
    return list(found.values())
