"""`digits-lstm`: an LSTM reading the 8x8 handwritten digits row by row (8 steps of 8 pixels),
a sequence classifier whose data ships with scikit-learn (offline)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register
from autocompress.zoo._train import fit_classifier
from autocompress.zoo.digits import NUM_CLASSES, _digits_8x8, _make_task

HIDDEN = 128


@functools.lru_cache(maxsize=1)
def _digit_rows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x_tr, y_tr, x_va, y_va = _digits_8x8()
    return x_tr[:, 0], y_tr, x_va[:, 0], y_va  # (N, 8 rows = steps, 8 pixels = features)


def digit_rows_task() -> Task:
    """The digits split of `digits_task`, each image a sequence of its 8 rows; metric top-1.

    Returns:
        A task whose batches are ``(x, y)`` with x of shape (B, 8, 8): (batch, step, pixel).
    """
    return _make_task("digits-rows", _digit_rows())


class DigitsLSTM(nn.Module):
    """A one-layer LSTM over the rows, its last hidden state into a linear classifier.

    Args:
        hidden: LSTM hidden units.
        num_classes: outputs of the classifier.
    """

    def __init__(self, hidden: int = HIDDEN, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes) for row sequences of shape (B, 8, 8)."""
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def train_digits_lstm(model: nn.Module, task: Task) -> None:
    """Train `DigitsLSTM` in place (fixed seed; a few seconds).

    Args:
        model: a freshly built `DigitsLSTM`.
        task: `digit_rows_task()`; only its training split is used.
    """
    fit_classifier(model, task, epochs=30, lr=1e-2, label="digits-lstm")


DIGITS_LSTM = register(
    ZooEntry(
        name="digits-lstm",
        description="LSTM (71k params) reading 8x8 digits row by row; top-1 accuracy",
        build=DigitsLSTM,
        task=digit_rows_task,
        train=train_digits_lstm,
    )
)
