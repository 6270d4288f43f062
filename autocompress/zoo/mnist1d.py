"""MNIST-1D (Greydanus 2020): 40-sample 1-D signals of the ten digits, generated locally by the
`mnist1d` package, and a small 1-D CNN on them. Compression visibly costs accuracy here."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register
from autocompress.zoo._train import fit_classifier, train_loader


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The standard MNIST-1D split (4000 train, 1000 test), made by `make_dataset` (~1 s).

    Returns:
        ``(x_train, y_train, x_val, y_val)`` with x of shape (N, 1, 40), normalized by the
        training mean and std.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated from templates; no download
    x, x_val = data["x"].astype(np.float32), data["x_test"].astype(np.float32)
    mean, std = float(x.mean()), float(x.std())
    return (
        torch.from_numpy((x - mean) / std)[:, None],
        torch.from_numpy(data["y"].astype(np.int64)),
        torch.from_numpy((x_val - mean) / std)[:, None],
        torch.from_numpy(data["y_test"].astype(np.int64)),
    )


def mnist1d_task() -> Task:
    """MNIST-1D: 4000 training and 1000 held-out signals, metric top-1.

    Returns:
        A task whose batches are ``(x, y)`` with x of shape (B, 1, 40).
    """
    x_tr, y_tr, x_va, y_va = _mnist1d()
    train = train_loader(TensorDataset(x_tr, y_tr))
    return Task(
        name="mnist1d",
        train=train,
        val=DataLoader(TensorDataset(x_va, y_va), batch_size=500),
        example_input=x_va[:1].clone(),
        metric=top1,
        metric_name="top1",
    )


class Mnist1dCNN(nn.Module):
    """Three strided 1-D convolutions (5 taps, 32 channels, BatchNorm) and a linear head."""

    def __init__(self, channels: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(3):
            layers += [
                nn.Conv1d(c_in, channels, 5, stride=2, padding=2, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes) for signals of shape (B, 1, 40)."""
        return self.head(torch.flatten(self.features(x), 1))


def train_mnist1d_cnn(model: nn.Module, task: Task) -> None:
    """Train `Mnist1dCNN` in place (fixed seed).

    Args:
        model: a freshly built `Mnist1dCNN`.
        task: `mnist1d_task()`; only its training split is used.
    """
    fit_classifier(model, task, epochs=40, lr=1e-2, label="mnist1d-cnn")


MNIST1D_CNN = register(
    ZooEntry(
        name="mnist1d-cnn",
        description="1-D CNN on MNIST-1D signals (generated locally); top-1 accuracy",
        build=Mnist1dCNN,
        task=mnist1d_task,
        train=train_mnist1d_cnn,
    )
)
