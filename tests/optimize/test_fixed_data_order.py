"""Every trial fine-tunes on the same batches, whatever ran before it; export relies on it."""

from __future__ import annotations

import torch

from autocompress.optimize.objectives import fixed_data_order
from autocompress.zoo import load_task


def test_fixed_data_order_replays_the_same_batches_and_restores_the_loader() -> None:
    task = load_task("digits-cnn")
    with fixed_data_order(task):
        first = [y for _, y in task.train]
    for _ in range(3):  # other trials, BatchNorm recalibration, calibration ...
        next(iter(task.train))
    state = task.train.generator.get_state()
    with fixed_data_order(task):
        again = [y for _, y in task.train]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(task.train.generator.get_state(), state)  # the loader goes on as before
    outside = [y for _, y in task.train]
    assert not all(torch.equal(a, b) for a, b in zip(first, outside, strict=True))
