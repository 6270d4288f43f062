"""Models and tasks the CLI tests name as `--model tests.factories:NAME` (real nn.Modules).

Tiny on purpose: a trial on them takes well under a second, except `slow_mlp`, whose training
steps sleep so that a worker can be caught in the middle of a trial.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.evaluate.metrics import top1
from autocompress.task import Task

FEATURES, CLASSES = 8, 4
SLOW_STEP_S = 0.25  # one training step of slow_mlp


class TinyMLP(nn.Module):
    """8 -> 16 -> 4; the hidden layer is prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, 16)
        self.fc2 = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class SlowMLP(TinyMLP):
    """TinyMLP whose training forward sleeps: a trial with N steps lasts N x SLOW_STEP_S."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(SLOW_STEP_S)
        return super().forward(x)


class FixedWidthMLP(TinyMLP):
    """Its forward hard-codes the hidden width, so no plan that prunes fc1 can be applied."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc1(x)).reshape(-1, 16)
        return self.fc2(hidden)


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return TinyMLP().eval()


def slow_mlp() -> nn.Module:
    torch.manual_seed(0)
    return SlowMLP().eval()


def fixed_width_mlp() -> nn.Module:
    torch.manual_seed(0)
    return FixedWidthMLP().eval()


def raises() -> nn.Module:
    raise FileNotFoundError("weights.pt not found")


def not_a_module() -> dict[str, int]:
    return {"weights": 1}


def exits() -> nn.Module:
    """A factory that ends the process instead of returning a model."""
    sys.exit(0)


def _data(n: int, seed: int, features: int = FEATURES) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long())


def _task(name: str, *, val_n: int = 32, features: int = FEATURES, loss=None) -> Task:
    return Task(
        name=name,
        train=DataLoader(_data(64, 1, features), batch_size=16),
        val=DataLoader(_data(val_n, 2, features), batch_size=16),
        example_input=torch.randn(1, features),
        metric=top1,
        metric_name="top1",
        loss=loss,
    )


def tiny_task() -> Task:
    return _task("tiny")


def wrong_shape_task() -> Task:
    """Inputs of 5 features for a model that takes 8."""
    return _task("wrong-shape", features=5)


def empty_val_task() -> Task:
    return _task("empty-val", val_n=0)


def _nan_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, batch: object) -> torch.Tensor:
    return (student_out - teacher_out).sum() * float("nan")


def nan_mlp() -> nn.Module:
    """tiny_mlp with one NaN weight: every output is NaN."""
    model = tiny_mlp()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    return model


def _nan_when_pruned(model: nn.Module, loader: DataLoader) -> float:
    """top1 for the dense tiny_mlp, NaN for any model with fewer parameters."""
    dense = sum(p.numel() for p in TinyMLP().parameters())
    return top1(model, loader) if sum(p.numel() for p in model.parameters()) >= dense else math.nan


def nan_metric_task() -> Task:
    """A task whose metric returns NaN for every pruned model."""
    task = _task("nan-metric")
    return dataclasses.replace(task, metric=_nan_when_pruned)


def _broken_metric(model: nn.Module, loader: DataLoader) -> float:
    raise KeyError("label")


def broken_metric_task() -> Task:
    """A task whose metric raises on any model, the dense one included."""
    return dataclasses.replace(_task("broken-metric"), metric=_broken_metric)


def nan_loss_task() -> Task:
    """A task whose fine-tuning loss is NaN from the first step."""
    return _task("nan-loss", loss=_nan_loss)


class OutOfMemoryMLP(TinyMLP):
    """TinyMLP that runs out of memory in every training step (as a too-large batch would)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            raise torch.OutOfMemoryError("tried to allocate 20.00 GiB")
        return super().forward(x)


def out_of_memory_mlp() -> nn.Module:
    torch.manual_seed(0)
    return OutOfMemoryMLP().eval()
