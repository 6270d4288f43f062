"""What judges a model: training and validation data, the metric, and the fine-tuning loss."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

Metric = Callable[[nn.Module, DataLoader], float]
Loss = Callable[[Any, Any, Any], torch.Tensor]


@dataclass(frozen=True)
class Task:
    """A task: the data and metric that judge a model.

    Args:
        name: short name shown in reports.
        train: batches for fine-tuning and BatchNorm recalibration (never used for the metric).
        val: held-out batches the metric is measured on; fine-tuning never sees them.
        example_input: one input batch as the model takes it (a tensor or a tuple of tensors);
            its batch size is the one latency is measured at unless told otherwise.
        metric: `metric(model, loader) -> float`, higher is better.
        metric_name: what the metric is called ("top1").
        loss: optional `loss(student_out, teacher_out, batch) -> Tensor`; default: distillation
            from the dense model's outputs (plus cross-entropy on labels where batches carry them).
        extra_metrics: more `metric(model, loader)` figures recorded with every trial by name
            (not searched on), e.g. a downstream probe beside an embedding's fidelity.
        finetune_lr: the fine-tune's learning rate; None for the default (1e-3). Pretrained
            transformers need a smaller one.
    """

    name: str
    train: DataLoader
    val: DataLoader
    example_input: torch.Tensor | tuple[torch.Tensor, ...]
    metric: Metric
    metric_name: str = "metric"
    loss: Loss | None = None
    extra_metrics: Mapping[str, Metric] = field(default_factory=dict)
    finetune_lr: float | None = None

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The example input as a tuple of positional arguments."""
        ex = self.example_input
        return ex if isinstance(ex, tuple) else (ex,)

    def calibration_batches(self, batches: int = 4) -> list[tuple[torch.Tensor, ...]]:
        """A few training batches, as argument tuples, to calibrate static int8 ranges."""
        picked = itertools.islice(self.train, batches)
        return [x if isinstance(x, tuple) else (x,) for x, _ in picked]


def fit_to_shapes(
    arrays: Sequence[np.ndarray], shapes: Sequence[Sequence[int | None]]
) -> list[np.ndarray]:
    """Calibration arrays zero-padded or cut to a graph's static input sizes.

    A graph exported from one example batch has its non-batch dimensions fixed (a text model
    at 128 tokens), while training batches are padded to their own longest sequence. Zero is
    the padding a tokenizer adds (pad id and attention mask 0), so the padded batch is the same
    text; dimensions that are dynamic (None) are left as they are.

    Args:
        arrays: one batch, an array per graph input.
        shapes: each input's dimensions, None where dynamic.

    Returns:
        The arrays, each fitted to its input's static sizes.
    """
    fitted = []
    for array, shape in zip(arrays, shapes, strict=True):
        for axis, size in enumerate(shape):
            if axis == 0 or size is None or axis >= array.ndim or array.shape[axis] == size:
                continue
            if array.shape[axis] > size:
                array = np.take(array, range(size), axis=axis)
            else:
                pad = [(0, 0)] * array.ndim
                pad[axis] = (0, size - array.shape[axis])
                array = np.pad(array, pad)
        fitted.append(array)
    return fitted
