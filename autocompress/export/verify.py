"""Checks of a reloaded artifact against the in-memory candidate and against the study's figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

# Accuracy of the reloaded artifact may differ from the study's by at most this much, in the
# metric's own units: 0.005 is half a point of a metric in [0, 1] such as top-1.
MAX_ACCURACY_DIFF = 0.005
# Outputs of the reloaded artifact vs the in-memory candidate. A float artifact runs the same
# kernels: differences are rounding only. An int8 one is compiled again after loading, so
# rounding at a requantization step may flip a few int8 codes.
FLOAT_REL_TOL = 1e-4
INT8_REL_TOL = 0.05
MIN_TOP1_AGREEMENT = 0.99


def _inputs(x: Any) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, tuple | list) else (x,)


@torch.no_grad()
def outputs(model: nn.Module, batches: Sequence[Any]) -> list[torch.Tensor]:
    """`model`'s outputs on each batch of inputs (first output where it returns several)."""
    result = []
    for x in batches:
        out = model(*_inputs(x))
        if isinstance(out, tuple | list):
            out = out[0]
        result.append(out.detach().float())
    return result


@dataclass(frozen=True)
class OutputCheck:
    """How the reloaded artifact's outputs compare with the in-memory candidate's."""

    max_abs_diff: float
    output_scale: float
    tolerance: float
    top1_agreement: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def reason(self) -> str:
        """Why the check failed, for a person."""
        agreement = (
            "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.2%}"
        )
        return (
            f"reloaded outputs differ from the in-memory candidate: max |diff| "
            f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}){agreement}"
        )


def compare_outputs(
    artifact: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], *, int8: bool
) -> OutputCheck:
    """Compare outputs batch by batch.

    Args:
        artifact: the reloaded artifact's outputs.
        reference: the in-memory candidate's outputs on the same batches.
        int8: the model has int8 layers (looser value tolerance, top-1 must agree on 99%).

    Returns:
        The check; `passed` when the largest difference is within tolerance (relative to the
        largest reference output) and, for 2-D outputs, top-1 agrees on at least 99%.
    """
    worst = max(float((a - r).abs().max()) for a, r in zip(artifact, reference, strict=True))
    scale = max(float(r.abs().max()) for r in reference)
    tolerance = (INT8_REL_TOL if int8 else FLOAT_REL_TOL) * max(scale, 1.0)
    agree = total = 0
    for a, r in zip(artifact, reference, strict=True):
        if r.dim() == 2:
            agree += int((a.argmax(1) == r.argmax(1)).sum())
            total += r.shape[0]
    agreement = agree / total if total else None
    passed = worst <= tolerance and (agreement is None or agreement >= MIN_TOP1_AGREEMENT)
    return OutputCheck(worst, scale, tolerance, agreement, passed)
