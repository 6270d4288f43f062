"""Plain alternatives: measured in the target's runtime beside the dense model, and the one
each candidate is compared with."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autocompress.evaluate.metrics import top1
from autocompress.hardware.targets import resolve_target
from autocompress.optimize.alternatives import best_alternative, measure_alternatives
from autocompress.task import Task
from tests.conftest import make_tiny_resnet

ALTERNATIVES = [
    {"label": "fp32", "latency_ms": 1.0, "ratio": 1.0, "accuracy": 0.99},
    {"label": "int8", "latency_ms": 0.4, "ratio": 0.4, "accuracy": 0.97},
    {"label": "int8 careful", "latency_ms": 0.5, "ratio": 0.5, "accuracy": 0.985},
    {"label": "broken", "error": "RuntimeError: no"},
]


@pytest.mark.parametrize(
    ("accuracy", "label"),
    [
        (0.96, "int8"),  # the fastest is accurate enough
        (0.98, "int8 careful"),  # the fastest at least as accurate
        (0.99, "fp32"),
        (0.995, "fp32"),  # none as accurate: the most accurate
    ],
)
def test_best_alternative_is_the_fastest_at_least_as_accurate(accuracy: float, label: str) -> None:
    best = best_alternative(ALTERNATIVES, accuracy)
    assert best is not None and best["label"] == label


def test_no_measured_alternative_means_none() -> None:
    assert best_alternative([], 0.5) is None
    assert best_alternative([ALTERNATIVES[-1]], 0.5) is None


def test_an_alternative_the_metric_scored_nan_is_compared_with_no_candidate() -> None:
    unscored = [{**a, "accuracy": float("nan")} for a in ALTERNATIVES[:3]]
    assert best_alternative(unscored, 0.5) is None  # was: min() of an empty sequence
    best = best_alternative([*unscored, ALTERNATIVES[1]], 0.995)
    assert best is not None and best["label"] == "int8" and best["accuracy"] == 0.97


def _image_task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 16, 16, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return Task("images", train=loader, val=loader, example_input=x[:1], metric=top1)


def test_alternatives_in_onnxruntime_are_measured_against_what_plans_of_their_kind_are() -> None:
    pytest.importorskip("onnxruntime")
    dense, task = make_tiny_resnet(), _image_task()
    target = resolve_target("cpu:onnxruntime")
    target.rounds = 3
    rows = measure_alternatives(target, dense, task, task.inputs(), dense_ms=2.0)
    labels = [r["label"] for r in rows]
    assert labels == [
        "dense, ONNX Runtime fp32",
        "dense, ONNX Runtime int8",
        "dense, PyTorch eager fp32",
    ]
    assert all("error" not in r for r in rows), rows
    fp32 = rows[0]
    # The dense model in ORT fp32 is the reference itself, timed against itself.
    assert 0.7 < fp32["ratio"] < 1.4
    assert fp32["latency_ms"] == pytest.approx(2.0 * fp32["ratio"])
    assert fp32["accuracy"] == pytest.approx(top1(dense, task.val))
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    # The plain int8 model is timed against the int8 twin an int8 plan is timed against (the
    # same model: a ratio near 1), carried to the dense model by the twin's ratio.
    int8 = rows[1]
    any_int8 = target.quantize_graph(target.graph(dense, task.inputs()), [task.inputs()], None)
    twin = target.reference_for(dense, any_int8, task.inputs())
    assert twin.model is not dense
    assert 0.7 < int8["ratio"] / twin.to_dense < 1.4
    assert int8["latency_ms"] == pytest.approx(2.0 * int8["ratio"])


def test_the_eager_cpu_target_lists_onnxruntime_as_its_alternatives() -> None:
    pytest.importorskip("onnxruntime")
    builders = resolve_target("cpu").alternatives(
        make_tiny_resnet(), (torch.randn(1, 1, 16, 16),), []
    )
    # ... and not the dense model in PyTorch eager: on this target that is the baseline itself
    assert list(builders) == ["dense, ONNX Runtime fp32", "dense, ONNX Runtime int8"]


def test_alternatives_are_settled_like_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    dense, task = make_tiny_resnet(), _image_task()
    target = resolve_target("cpu:onnxruntime")
    target.rounds = 3
    timed: list[object] = []
    measure = target.measure

    def counted(model: object, *args: object, **kwargs: object) -> object:
        timed.append(model)
        return measure(model, *args, **kwargs)

    monkeypatch.setattr(target, "measure", counted)
    rows = measure_alternatives(target, dense, task, task.inputs(), dense_ms=2.0)
    # Each alternative timed at least twice (a third time when the two ratios disagree), and
    # the int8 twin an int8 plan is timed against, and the dense model, twice each alone.
    assert len(rows) == 3 and 10 <= len(timed) <= 13
    assert all(timed.count(model) >= 2 for model in timed)
