"""The seeded training loop shared by the zoo's classifiers."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autocompress.task import Task

SEED = 0
TRAIN_BATCH = 64


def train_loader(
    dataset: Dataset, *, batch_size: int = TRAIN_BATCH, collate_fn: Callable | None = None
) -> DataLoader:
    """A zoo task's training loader: shuffled in the same seeded order on every run.

    Args:
        dataset: the training split.
        batch_size: samples per batch.
        collate_fn: how samples become a batch; None for torch's default.

    Returns:
        The loader.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(SEED),
        collate_fn=collate_fn,
    )


def fit_classifier(
    model: nn.Module,
    task: Task,
    *,
    epochs: int,
    lr: float,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    label: str = "",
) -> None:
    """Train a classifier with AdamW and a one-cycle schedule on the task's training split only.

    Args:
        model: trained in place, left in eval mode.
        task: its `train` dataset is reshuffled with a fixed seed (the loader's own order is
            not used, so results don't depend on how often it was iterated before), in
            batches of the loader's size, put together by its `collate_fn`; a batch input
            that is a tuple is passed as positional arguments.
        epochs: passes over the training split.
        lr: peak learning rate.
        augment: optional batch transform applied to (tensor) inputs during training.
        label: shown on the progress bar.
    """
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    loader = DataLoader(
        task.train.dataset,
        batch_size=task.train.batch_size or TRAIN_BATCH,
        shuffle=True,
        generator=gen,
        collate_fn=task.train.collate_fn,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(loader)
    )
    from rich.console import Console
    from rich.progress import Progress

    model.train()
    console = Console(file=sys.stderr)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        todo = bar.add_task(f"training {label}", total=epochs * len(loader))
        for _ in range(epochs):
            for x, y in loader:
                if augment is not None:
                    x = augment(x)
                out = model(*x) if isinstance(x, tuple | list) else model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.advance(todo)
    model.eval()
