"""Which levels of a knob a dense layer can take, asked before any plan is drawn.

A search space names levels per layer type ("rank 0.5 on every Conv2d"); some layers cannot
take some of them: a rank that keeps as many weights as the layer has, a depthwise or
"same"-padding convolution that factorization does not support, a 2:4 pattern on an input
width that is not a multiple of 4. The space drops those levels for those layers (so no plan
asks for them), instead of each trial applying them and warning that it could not.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autocompress.compress.method import owner


def refusal(module: nn.Module, setting: str, value: Any) -> str | None:
    """Why the dense layer `module` cannot take `setting = value`, in words; None when it can.

    The method that owns the setting decides (`Method.refusal`); settings without a
    per-layer limit (channel keep ratios, bit-widths, sparsity amounts) are always accepted;
    what a plan still cannot apply after pruning has changed a layer's shape is reported when
    the plan is applied (`errors.PlanWarning`).

    Args:
        module: the layer, as in the dense model.
        setting: a `LayerConfig` field ("rank_ratio", "sparsity_pattern", ...).
        value: one level of it.

    Returns:
        A short reason, or None.
    """
    return owner(setting).refusal(module, setting, value)
