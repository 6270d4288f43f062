"""Measuring a plan: the deployed model timed against a reference that runs like it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.compress.apply import apply
from autocompress.config import LayerConfig, Plan
from autocompress.evaluate.metrics import top1
from autocompress.hardware.targets import CpuTarget, Reference
from autocompress.hardware.timing import Measurement
from autocompress.latency.kernel import FP32
from autocompress.latency.lut import measure_lut
from autocompress.latency.profile import measure_candidate
from autocompress.task import Task


class _Recording(CpuTarget):
    """The cpu target, keeping what it timed (settled) against what, and the references it chose."""

    def __init__(self) -> None:
        super().__init__(rounds=2)
        self.timed: list[tuple[Measurement, nn.Module | None]] = []
        self.references: list[Reference] = []

    def measure_settled(
        self,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: nn.Module,
        rounds: int | None = None,
    ) -> Measurement:
        measurement = super().measure_settled(model, inputs, reference=reference, rounds=rounds)
        self.timed.append((measurement, reference))
        return measurement

    def reference_for(
        self, dense: nn.Module, deployed: Any, inputs: tuple[torch.Tensor, ...]
    ) -> Reference:
        reference = super().reference_for(dense, deployed, inputs)
        self.references.append(reference)
        return reference


def _setup() -> tuple[nn.Module, Task, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(x, torch.randint(0, 10, (16,))), batch_size=8)
    return dense, Task("synthetic", loader, loader, x[:1], top1, "top1"), (x[:1],)


@pytest.mark.usefixtures("quick_timing")  # how the ratios combine, not how precise they are
def test_a_compiled_plan_is_carried_to_the_dense_model_by_the_twins_ratio() -> None:
    dense, task, inputs = _setup()
    plan = Plan(layers={"0": LayerConfig(weight_bits=8, act_bits=8)})
    target = _Recording()
    measurement = measure_candidate(
        apply(dense, plan, task.inputs()), plan, dense, task, target, inputs
    )
    (reference,) = target.references
    twin = reference.model
    assert twin is not dense and getattr(twin, "compiled", False)
    (factor, factor_against), (raw, timed_against) = target.timed
    assert factor_against is dense and factor.ratio == reference.to_dense
    assert timed_against is twin, "the plan is timed against the compiled twin"
    assert raw.ratio is not None and raw.reference_ms is not None
    assert measurement.ratio == raw.ratio * reference.to_dense
    assert measurement.reference_ms == raw.reference_ms / reference.to_dense
    assert measurement.median_ms == raw.median_ms
    assert measurement.to_dense == reference.to_dense  # recorded: export carries by it too


def test_an_eager_plan_is_timed_against_the_dense_model() -> None:
    dense, task, inputs = _setup()
    plan = Plan(layers={"0": LayerConfig(weight_bits=16)})  # bf16: runs eagerly
    target = _Recording()
    measurement = measure_candidate(
        apply(dense, plan, task.inputs()), plan, dense, task, target, inputs
    )
    ((raw, timed_against),) = target.timed
    assert target.references == [Reference(dense)]
    assert timed_against is dense and measurement == raw


def test_lookup_table_entries_count_output_elements_per_sample() -> None:
    lstm = {"type": "LSTM", "bias": True, "in_size": [5], "layers": 1, "bidirectional": False}
    linear = {"type": "Linear", "bias": True, "in_size": [5]}
    grid = {
        (json.dumps(lstm), FP32): ([4], [6, 8]),
        (json.dumps(linear), FP32): ([4], [6]),
    }
    entries = measure_lut(grid, CpuTarget(rounds=1), batch=3)
    assert [(e["cin"], e["cout"], e["out_elems"]) for e in entries] == [
        (4, 6, 5 * 6),
        (4, 8, 5 * 8),
        (4, 6, 5 * 6),
    ]
    assert all(e["ms"] > 0 for e in entries)
