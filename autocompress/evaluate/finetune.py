"""Short recovery fine-tune distilled from the dense model, and BatchNorm recalibration."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from autocompress.errors import AutocompressError
from autocompress.task import Task

DEFAULT_LR = 1e-3


class FinetuneError(AutocompressError):
    """Fine-tuning could not go on (e.g. the loss became NaN); the trial is recorded as failed."""


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did."""

    steps: int
    final_loss: float
    seconds: float


def _forward(model: nn.Module, x: object) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple | list) else model(x)


def distillation_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Hinton distillation: KL to the teacher's softened outputs, plus cross-entropy on labels.

    Args:
        student_out: logits of the compressed model.
        teacher_out: logits of the dense model.
        labels: class labels when the batch has them (their term weighs 1 - alpha).
        temperature: softening temperature.
        alpha: weight of the distillation term.

    Returns:
        The scalar loss.
    """
    kd = F.kl_div(
        F.log_softmax(student_out / temperature, dim=-1),
        F.log_softmax(teacher_out / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    if labels is None or labels.dtype not in (torch.int64, torch.int32):
        return kd
    return alpha * kd + (1 - alpha) * F.cross_entropy(student_out, labels)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, *, batches: int = 20) -> None:
    """Re-estimate BatchNorm running statistics on training batches (pruning invalidates them).

    Args:
        model: the model to recalibrate (left in eval mode).
        loader: training batches `(x, y)`.
        batches: how many batches to average over.
    """
    if not _has_batchnorm(model):
        return
    saved = {}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            saved[module] = module.momentum
            module.momentum = None  # cumulative average over the batches seen
    model.train()
    for x, _ in itertools.islice(itertools.cycle(loader), batches):
        _forward(model, x)
    for module, momentum in saved.items():
        module.momentum = momentum
    model.eval()


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    *,
    steps: int,
    lr: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Train `student` for `steps` batches of `task.train`, distilling from `teacher`.

    BatchNorm is recalibrated before (pruning leaves stale statistics) and after. The
    validation split is never touched.

    Args:
        student: the compressed model (trained in place).
        teacher: the dense model (frozen, eval mode).
        task: gives the training batches and optionally its own loss.
        steps: optimizer steps; 0 only recalibrates BatchNorm.
        lr: Adam learning rate (cosine-decayed to zero); None: the task's `finetune_lr`, else
            `DEFAULT_LR`.
        on_step: called as `on_step(step, loss)` after each step.

    Returns:
        Steps run, the last loss and the time taken.

    Raises:
        FinetuneError: the loss is NaN or infinite.
    """
    started = time.perf_counter()
    recalibrate_batchnorm(student, task.train)
    loss_value = math.nan
    if steps > 0:
        teacher.eval()
        student.train()
        if lr is None:
            lr = task.finetune_lr if task.finetune_lr is not None else DEFAULT_LR
        optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        batches = itertools.cycle(task.train)
        for step in range(1, steps + 1):
            x, y = next(batches)
            with torch.no_grad():
                teacher_out = _forward(teacher, x)
            student_out = _forward(student, x)
            if task.loss is not None:
                loss = task.loss(student_out, teacher_out, (x, y))
            else:
                loss = distillation_loss(student_out, teacher_out, y)
            loss_value = loss.detach().item()
            if not math.isfinite(loss_value):
                raise FinetuneError(f"fine-tune loss became {loss_value} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step(step, loss_value)
        recalibrate_batchnorm(student, task.train)
    student.eval()
    return FinetuneResult(steps=steps, final_loss=loss_value, seconds=time.perf_counter() - started)
