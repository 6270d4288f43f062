"""Recovery fine-tune: BatchNorm recalibration, the distillation loss, and the training loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.compress.apply import apply
from autocompress.config import LayerConfig, Plan
from autocompress.evaluate.finetune import (
    FinetuneError,
    TeacherOutputs,
    distillation_loss,
    finetune,
    recalibrate_batchnorm,
)
from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from tests.conftest import TINY_GROUPS, TinyResNet, make_tiny_resnet


class _UntouchableLoader:
    """A validation loader that fails the test if anything iterates it."""

    def __iter__(self) -> Iterator[object]:
        raise AssertionError("finetune iterated the validation loader")

    def __len__(self) -> int:
        return 1


def _loader(n: int = 64, batch_size: int = 16, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _task(**overrides: object) -> Task:
    fields: dict[str, object] = {
        "name": "synthetic",
        "train": _loader(seed=0),
        "val": _UntouchableLoader(),
        "example_input": torch.randn(1, 1, 16, 16),
        "metric": top1,
        "metric_name": "top1",
    }
    fields.update(overrides)
    return Task(**fields)  # type: ignore[arg-type]


def _pruned(dense: TinyResNet) -> nn.Module:
    plan = Plan(
        layers={
            m: LayerConfig(keep_ratio=0.5)
            for g in ("stem.0", "layer1.conv1", "layer2.conv1", "layer2.conv2")
            for m in TINY_GROUPS[g]
        }
    )
    return apply(dense, plan, torch.randn(1, 1, 16, 16))


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.endswith(("running_mean", "running_var"))
    }


def test_recalibrate_batchnorm_changes_running_stats_and_leaves_eval_mode(
    tiny_resnet: TinyResNet,
) -> None:
    student = _pruned(tiny_resnet)
    student.train()
    before = _bn_stats(student)
    weights = {k: v.clone() for k, v in student.named_parameters()}
    recalibrate_batchnorm(student, _loader(), batches=3)
    after = _bn_stats(student)
    assert not student.training
    assert all(not m.training for m in student.modules())
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    # only statistics move, never the weights; momentum is restored
    assert all(torch.equal(v, weights[k]) for k, v in student.named_parameters())
    assert all(m.momentum == 0.1 for m in student.modules() if isinstance(m, nn.BatchNorm2d))


def test_recalibrate_batchnorm_is_the_average_over_the_batches() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3))
    x = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 10.0], [6.0, 7.0, 8.0]])
    loader = DataLoader(TensorDataset(x, torch.zeros(4)), batch_size=2)
    recalibrate_batchnorm(model, loader, batches=2)
    # momentum None during recalibration: the plain mean of the two batch means
    assert torch.allclose(model[0].running_mean, torch.tensor([3.0, 4.0, 6.0]))
    assert model[0].momentum == 0.1


def test_recalibrate_batchnorm_without_batchnorm_does_nothing() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    model.train()
    recalibrate_batchnorm(model, _UntouchableLoader())  # type: ignore[arg-type]
    assert model.training


def test_distillation_loss_is_zero_for_identical_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    assert float(distillation_loss(logits, logits.clone())) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_is_positive_for_different_logits() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    assert float(distillation_loss(student, teacher)) > 0.0
    labels = torch.randint(0, 10, (8,))
    # with labels, cross-entropy keeps the loss positive even when the logits agree
    assert float(distillation_loss(teacher, teacher, labels)) > 0.0
    assert float(distillation_loss(student, teacher, labels, alpha=1.0)) == pytest.approx(
        float(distillation_loss(student, teacher))
    )


def test_distillation_loss_ignores_non_class_labels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    targets = torch.randn(8, 10)  # regression-style targets are not class labels
    assert float(distillation_loss(logits, logits, targets)) == pytest.approx(0.0, abs=1e-6)


def test_finetune_reduces_the_distillation_loss(tiny_resnet: TinyResNet) -> None:
    teacher = copy.deepcopy(tiny_resnet)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _pruned(tiny_resnet)
    torch.manual_seed(0)
    x = torch.randn(32, 1, 16, 16)
    # float targets are not class labels, so the loss is the pure distillation term;
    # one batch, so every step sees the same data
    train = DataLoader(TensorDataset(x, torch.zeros(32)), batch_size=32)
    losses: list[tuple[int, float]] = []
    result = finetune(
        student, teacher, _task(train=train), steps=20, on_step=lambda s, v: losses.append((s, v))
    )
    assert result.steps == 20
    assert [s for s, _ in losses] == list(range(1, 21))
    assert result.final_loss == losses[-1][1]
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert result.seconds >= 0.0
    assert not student.training
    # the teacher is frozen
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


class _CountingTeacher(nn.Module):
    """Wraps a model and counts its forward passes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def test_teacher_outputs_run_the_teacher_once_per_batch_across_fine_tunes(
    tiny_resnet: TinyResNet,
) -> None:
    teacher = _CountingTeacher(copy.deepcopy(tiny_resnet)).eval()
    outputs = TeacherOutputs(teacher)
    task = _task(train=_loader(n=64, batch_size=16))  # 4 batches, same order every pass
    trained = []
    for _ in range(2):
        torch.manual_seed(0)
        student = _pruned(copy.deepcopy(tiny_resnet))
        finetune(student, teacher, task, steps=6, teacher_outputs=outputs)
        trained.append(student.state_dict())
    assert teacher.calls == 4  # 12 steps over 4 distinct batches
    # without the cache: the teacher runs every step, and the student ends the same
    torch.manual_seed(0)
    student = _pruned(copy.deepcopy(tiny_resnet))
    finetune(student, teacher, task, steps=6)
    assert teacher.calls == 4 + 6
    for reference in trained:
        for name, value in student.state_dict().items():
            torch.testing.assert_close(value, reference[name])


def test_teacher_outputs_tell_batches_apart_and_respect_their_byte_cap(
    tiny_resnet: TinyResNet,
) -> None:
    teacher = _CountingTeacher(tiny_resnet.eval())
    x = torch.randn(8, 1, 16, 16)
    capped = TeacherOutputs(teacher, max_bytes=8 * 10 * 4)  # room for one (8, 10) output
    torch.testing.assert_close(capped(x), tiny_resnet(x))
    torch.testing.assert_close(capped(x.clone()), tiny_resnet(x))  # same bytes: a hit
    other = x.clone()
    other[0, 0, 0, 0] += 1.0
    assert not torch.equal(capped(other), capped(x))
    capped(other)
    assert teacher.calls == 3  # x once; `other` twice: it did not fit under the cap


def test_finetune_refuses_outputs_of_another_teacher(tiny_resnet: TinyResNet) -> None:
    outputs = TeacherOutputs(copy.deepcopy(tiny_resnet))
    with pytest.raises(ValueError, match="another teacher"):
        finetune(_pruned(tiny_resnet), tiny_resnet, _task(), steps=1, teacher_outputs=outputs)


def test_finetune_with_labels_reduces_the_loss(tiny_resnet: TinyResNet) -> None:
    torch.manual_seed(0)
    losses: list[float] = []
    task = _task(train=_loader(n=32, batch_size=32))
    result = finetune(
        _pruned(tiny_resnet), tiny_resnet, task, steps=10, on_step=lambda s, v: losses.append(v)
    )
    assert result.steps == 10
    assert losses[-1] < losses[0]


def test_finetune_with_zero_steps_only_recalibrates(tiny_resnet: TinyResNet) -> None:
    student = _pruned(tiny_resnet)
    weights = {k: v.clone() for k, v in student.named_parameters()}
    before = _bn_stats(student)
    result = finetune(student, tiny_resnet, _task(), steps=0)
    assert result.steps == 0
    assert math.isnan(result.final_loss)
    assert all(torch.equal(v, weights[k]) for k, v in student.named_parameters())
    assert any(not torch.equal(v, before[k]) for k, v in _bn_stats(student).items())


def test_finetune_uses_the_task_loss(tiny_resnet: TinyResNet) -> None:
    seen: list[tuple[torch.Size, torch.Size, int]] = []

    def loss(student_out: torch.Tensor, teacher_out: torch.Tensor, batch: object) -> torch.Tensor:
        _, y = batch  # type: ignore[misc]
        seen.append((student_out.shape, teacher_out.shape, len(y)))
        return (student_out - teacher_out).pow(2).mean()

    finetune(_pruned(tiny_resnet), tiny_resnet, _task(loss=loss), steps=3)
    assert seen == [(torch.Size([16, 10]), torch.Size([16, 10]), 16)] * 3


def test_nan_loss_raises_finetune_error(tiny_resnet: TinyResNet) -> None:
    def nan_loss(
        student_out: torch.Tensor, teacher_out: torch.Tensor, batch: object
    ) -> torch.Tensor:
        return student_out.sum() * float("nan")

    with pytest.raises(FinetuneError, match=r"(?i)\bnan\b.*step 1"):
        finetune(_pruned(tiny_resnet), tiny_resnet, _task(loss=nan_loss), steps=5)


def test_finetune_never_iterates_the_validation_loader() -> None:
    dense = make_tiny_resnet()
    student = _pruned(dense)
    task = _task()
    result = finetune(student, dense, task, steps=3)
    assert result.steps == 3
    with pytest.raises(AssertionError, match="validation loader"):
        iter(task.val)


def test_top1_counts_correct_predictions() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    x = torch.eye(4).reshape(4, 4)
    y = torch.tensor([0, 1, 0, 3])
    model.train()
    assert top1(model, DataLoader(TensorDataset(x, y), batch_size=3)) == pytest.approx(0.75)
    assert model.training  # measured in eval mode, then the caller's mode is restored
    with pytest.raises(ValueError, match="no samples"):
        top1(model, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=3))


def _closeness_to(reference: nn.Module) -> Callable[[nn.Module, object], float]:
    """A metric that scores a model by how close its outputs stay to `reference`'s (0 at best),
    so weights a fine-tune moved always score below the weights it started from."""
    reference = copy.deepcopy(reference).eval()

    @torch.no_grad()
    def metric(model: nn.Module, data: object) -> float:
        gaps = [(model(x) - reference(x)).abs().mean() for x, _ in data]  # type: ignore[attr-defined]
        return -float(torch.stack(gaps).mean())

    return metric


# One plan per method family, and all of them at once, on the tiny ResNet.
_METHOD_PLANS = {
    "prune": {"layer1.conv1": LayerConfig(keep_ratio=0.5)},
    "lowrank": {"layer2.conv1": LayerConfig(rank_ratio=0.25)},
    "sparse": {"layer2.conv2": LayerConfig(sparsity=0.5)},
    "quant": {"layer1.conv1": LayerConfig(weight_bits=8, act_bits=8)},
    "int4": {"layer2.conv1": LayerConfig(weight_bits=4)},
}
_METHOD_PLANS["all"] = {k: v for plan in _METHOD_PLANS.values() for k, v in plan.items()} | {
    "layer1.conv1": LayerConfig(keep_ratio=0.5, weight_bits=8, act_bits=8)
}


@pytest.mark.parametrize("method", sorted(_METHOD_PLANS))
def test_a_fine_tune_the_check_batches_score_lower_is_undone(
    tiny_resnet: TinyResNet, method: str
) -> None:
    """The weights put back are exactly those a 0-step fine-tune leaves, for every method's
    modules (their state must round-trip through state_dict)."""
    example = torch.randn(1, 1, 16, 16)
    plan = Plan(layers=_METHOD_PLANS[method])
    recalibrated = apply(tiny_resnet, plan, example)
    finetune(recalibrated, tiny_resnet, _task(), steps=0)
    student = apply(tiny_resnet, plan, example)
    task = _task(metric=_closeness_to(recalibrated))
    check = list(_loader(n=32, seed=1))
    result = finetune(student, tiny_resnet, task, steps=5, lr=1e-2, check=check)
    assert not result.kept and result.steps == 5
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(student(x), recalibrated(x))


def test_a_fine_tune_that_scores_higher_on_the_check_batches_is_kept(
    tiny_resnet: TinyResNet,
) -> None:
    # labels the dense model predicts: distillation moves the pruned student toward them
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = tiny_resnet.eval()(x).argmax(dim=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    task = _task(train=loader)
    student = _pruned(tiny_resnet)
    untrained = copy.deepcopy(student)
    finetune(untrained, tiny_resnet, task, steps=0)
    result = finetune(student, tiny_resnet, task, steps=60, lr=1e-2, check=list(loader))
    assert result.kept
    assert top1(student, loader) >= top1(untrained, loader)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(student.parameters(), untrained.parameters(), strict=True)
    )
