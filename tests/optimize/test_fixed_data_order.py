"""Every trial fine-tunes on the same batches, whatever ran before it; export relies on it."""

from __future__ import annotations

import copy

import torch
from torch import nn

from autocompress.evaluate.finetune import finetune
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


def test_a_fine_tune_with_dropout_replays_exactly_and_leaves_the_global_generator_alone() -> None:
    task = load_task("digits-cnn")
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with_dropout = nn.Sequential(*teacher[:3], nn.Dropout(0.5), teacher[3])

    def tuned() -> list[torch.Tensor]:
        student = copy.deepcopy(with_dropout)
        with fixed_data_order(task):
            finetune(student, teacher, task, steps=5)
        return [p.detach().clone() for p in student.parameters()]

    state = torch.random.get_rng_state()
    first = tuned()
    torch.rand(7)  # whatever ran in between (other trials draw too)
    again = tuned()
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    torch.random.set_rng_state(state)
    tuned()
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's stream goes on"
    start = list(with_dropout.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(first, start, strict=True)), "it trained"

    def loader_order_only() -> list[torch.Tensor]:
        student = copy.deepcopy(with_dropout)
        task.train.generator.manual_seed(0)
        finetune(student, teacher, task, steps=5)
        return [p.detach().clone() for p in student.parameters()]

    # the same batches without the global seed: dropout draws differ, and so do the weights
    one, other = loader_order_only(), loader_order_only()
    assert not all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
