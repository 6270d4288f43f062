"""Plain alternatives: what a user could deploy without a search, measured beside the front.

The dense model in the target's runtime at fp32 and with the runtime's standard int8
post-training quantization (and, on a runtime target, the dense model in PyTorch eager for
scale). Each is timed as the candidates are: interleaved with the reference a plan of its
kind is timed against (`Target.reference_for`), as a ratio carried to the dense model, so
its milliseconds compare with the candidates' (ratio x the study's dense latency), and
settled (`Target.measure_settled`: twice, a third time on a disagreement).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autocompress.hardware.targets import Target
from autocompress.task import Task

log = logging.getLogger(__name__)
Alternative = dict[str, Any]


def measure_alternatives(
    target: Target,
    dense: nn.Module,
    task: Task,
    inputs: tuple[torch.Tensor, ...],
    *,
    dense_ms: float,
) -> list[Alternative]:
    """Build and measure each of the target's plain alternatives.

    Args:
        target: the study's target.
        dense: the dense model.
        task: its task (calibration batches, validation data and metric).
        inputs: the input batch latency is measured with.
        dense_ms: the study's dense latency (the ratios are scaled by it).

    Returns:
        ``{"label", "latency_ms", "ratio", "accuracy"}`` per alternative that could be built;
        one that failed has ``{"label", "error"}`` instead.
    """
    rows: list[Alternative] = []
    builders = target.alternatives(dense, inputs, task.calibration_batches())
    for label, build in builders.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build()
            # Against what a plan of the same kind is timed against (`Target.reference_for`):
            # on a runtime target the plain int8 model is then paired with its own twin.
            reference = target.reference_for(dense, model, inputs)
            measurement = target.measure_settled(model, inputs, reference=reference.model)
            assert measurement.ratio is not None
            accuracy = float(task.metric(model, task.val))
        except Exception as exc:  # an alternative the runtime cannot build is reported, not fatal
            text = " ".join(str(exc).split())[:200]
            error = f"{type(exc).__name__}: {text}"
            log.warning("plain alternative %r not measured: %s", label, error)
            rows.append({"label": label, "error": error})
            continue
        rows.append(
            {
                "label": label,
                "latency_ms": measurement.ratio * reference.to_dense * dense_ms,
                "ratio": measurement.ratio * reference.to_dense,
                "accuracy": accuracy,
            }
        )
    return rows


def best_alternative(alternatives: Sequence[Alternative], accuracy: float) -> Alternative | None:
    """The alternative a candidate is compared with: the fastest one at least as accurate as the
    candidate; where none is, the most accurate one (the fastest of those).

    Args:
        alternatives: the study's measured alternatives.
        accuracy: the candidate's accuracy.

    Returns:
        The alternative, or None when none was measured (with a finite accuracy).
    """
    # an alternative the task's metric could not score (NaN) is compared with no candidate
    measured = [a for a in alternatives if "latency_ms" in a and math.isfinite(a["accuracy"])]
    if not measured:
        return None
    as_good = [a for a in measured if a["accuracy"] >= accuracy]
    if as_good:
        return min(as_good, key=lambda a: a["latency_ms"])
    top = max(a["accuracy"] for a in measured)
    return min((a for a in measured if a["accuracy"] == top), key=lambda a: a["latency_ms"])
