"""Per-layer sensitivity: what each level of each knob costs in the task's metric, alone.

For every searched decision (a layer's rank, a coupling group's keep ratio, a layer's bits)
and every level of it, the dense model gets that one change and nothing else, BatchNorm is
recalibrated, nothing is fine-tuned, and the task's metric is measured on a fixed slice of
the *training* split (the validation split stays the search's judge). HAQ, HAWQ and AMC spend
their budget on such per-layer measurements before they allocate; this is that measurement,
cached per model, task and space like a latency profile.

A level that needs a partner to mean anything is measured with it: int8 activations with
int8 weights on the same layers, a 2:4 pattern with its 50% sparsity.

Beside the metric, each change's output distortion is measured on the same batches: the
energy of the change in the model's outputs relative to the dense outputs'. A metric
saturates on an easy slice (on digits-resnet most single changes leave 8 training batches at
100% top-1, a drop of 0), the distortion still orders the changes, and output noise from
changes to different layers adds up to first order, which is what an allocation assumes.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.cache import cache_dir, write_atomic
from autocompress.compress.apply import apply, plan_notes
from autocompress.compress.method import owner
from autocompress.config import LayerConfig
from autocompress.errors import PlanError
from autocompress.evaluate.finetune import recalibrate_batchnorm
from autocompress.latency.profile import Bar, space_key
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob
from autocompress.space.uniform import IDENTITY, uniform_params
from autocompress.task import Task

SENSITIVITY_VERSION = 3  # 3: distortion against the recalibrated dense model
# Training batches the metric is measured on: enough that one layer's change moves it by more
# than its noise, few enough that ~200 single changes of a zoo model take a minute or two.
DEFAULT_BATCHES = 8
# A level's partner on the same layers, without which the level changes nothing.
_PARTNERS = {("act_bits", 8): ("weight_bits", 8), ("sparsity_pattern", "2:4"): ("sparsity", 0.5)}


@dataclass(frozen=True)
class Sensitivity:
    """The measured cost of each single change.

    Args:
        metric_name: the task's metric.
        dense: the dense model's metric on the slice.
        rows: one per (knob, level): ``{"param", "setting", "value", "layers", "metric",
            "drop", "distortion"}``; `drop` is dense minus metric (positive: the change
            costs), `distortion` the squared change of the outputs over the dense outputs'
            squared norm (None where the outputs are not tensors).
        batches: training batches in the slice.
        seconds: how long the measurement took.
    """

    metric_name: str
    dense: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    batches: int = DEFAULT_BATCHES
    seconds: float = 0.0

    def _row(self, param: str, value: Any) -> dict[str, Any] | None:
        """The row of one knob at one level; None for a level not measured (the identity, or
        one that changes nothing)."""
        return next((r for r in self.rows if r["param"] == param and r["value"] == value), None)

    def drop(self, param: str, value: Any) -> float:
        """The measured drop of one knob at one level; 0.0 for a level not measured."""
        row = self._row(param, value)
        return 0.0 if row is None else float(row["drop"])

    def cost(self, param: str, value: Any) -> float:
        """What an allocation charges for one knob at one level: its output distortion where
        measured, else its metric drop; 0.0 for a level not measured."""
        row = self._row(param, value)
        if row is None:
            return 0.0
        distortion = row.get("distortion")
        return float(row["drop"] if distortion is None else distortion)

    def to_json(self) -> str:
        """Versioned JSON."""
        return json.dumps({"version": SENSITIVITY_VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Sensitivity:
        """Parse `to_json`'s output.

        Raises:
            ValueError: not a sensitivity of this version.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != SENSITIVITY_VERSION:
            raise ValueError(f"not a version-{SENSITIVITY_VERSION} sensitivity file")
        return cls(**data)


def single_changes(knobs: Sequence[Knob]) -> list[tuple[Knob, Any, dict[str, Any]]]:
    """Every (knob, level) worth measuring, with the sampler parameters of its plan.

    Returns:
        ``(knob, level, params)``: every other knob at its identity (or mildest) value, the
        level's partner set where it has one; levels that leave the model as it is (the
        identity, a level its method ignores alone, or a partner no knob of those layers
        offers) are left out.
    """
    base = uniform_params(knobs, {})
    by_layers: dict[tuple[str, ...], dict[str, Knob]] = {}
    for knob in knobs:
        by_layers.setdefault(knob.layers, {})[knob.setting] = knob
    changes = []
    for knob in knobs:
        for value in knob.choices:
            if value == base[knob.param] or value == IDENTITY[knob.setting]:
                continue
            params = dict(base, **{knob.param: value})
            partner = _PARTNERS.get((knob.setting, value))
            if partner is None and not _changes_alone(knob.setting, value):
                continue  # a ramp with nothing pruned: the model as it is
            if partner is not None:
                other = by_layers.get(knob.layers, {}).get(partner[0])
                if other is None or partner[1] not in other.choices:
                    continue
                params[other.param] = partner[1]
            changes.append((knob, value, params))
    return changes


def _changes_alone(setting: str, value: Any) -> bool:
    """Whether a layer with only `setting = value` is changed (its method is on)."""
    try:
        return owner(setting).active(LayerConfig(**{setting: value}))
    except PlanError:  # a level that needs another knob's level beside it
        return True


def training_slice(task: Task, batches: int) -> list[Any]:
    """The first `batches` batches of the training split, the same ones every call (the
    loader's shuffling is seeded for the draw)."""
    generator = getattr(task.train, "generator", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if isinstance(generator, torch.Generator):
            saved = generator.get_state()
            generator.manual_seed(0)
        try:
            return list(itertools.islice(iter(task.train), batches))
        finally:
            if isinstance(generator, torch.Generator):
                generator.set_state(saved)


def measure_sensitivity(
    dense: nn.Module,
    task: Task,
    knobs: Sequence[Knob],
    *,
    round_to: int | None = None,
    batches: int = DEFAULT_BATCHES,
    show_progress: bool = False,
) -> Sensitivity:
    """Measure every single change of the space on the dense model (no fine-tune).

    Args:
        dense: the dense model (not modified).
        task: its task; the metric runs on `batches` of its training split.
        knobs: the space's knobs for the model (`SearchSpace.knobs(..., model=dense)`).
        round_to: the space's channel multiple.
        batches: training batches in the slice.
        show_progress: draw a progress bar.

    Returns:
        The Sensitivity, rows in knob order.

    Raises:
        ValueError: the training slice is empty.
    """
    started = time.perf_counter()
    data = training_slice(task, batches)
    if not data:
        raise ValueError(f"task {task.name!r} has no training batch to measure sensitivity on")
    dense.eval()
    with torch.no_grad():
        reference = float(task.metric(dense, data))
        # Outputs are compared with the dense model's after the same BatchNorm recalibration,
        # so that the recalibration's own change is no part of every change's distortion
        # (on effnet-fmnist it was 0.017, as much as an int8 layer's, for every change).
        recalibrated = copy.deepcopy(dense)
        recalibrate_batchnorm(recalibrated, data, batches=len(data))
        _, dense_outputs = _metric_and_outputs(recalibrated, task, data)
    changes = single_changes(knobs)
    rows = []
    with Bar(len(changes), enabled=show_progress) as bar, torch.no_grad():
        bar.describe("sensitivity")
        for knob, value, params in changes:
            plan = plan_from_trial(optuna.trial.FixedTrial(params), knobs, round_to=round_to)
            with plan_notes():  # a level a layer could not take is measured as what it did
                model = apply(dense, plan, task.inputs())
            recalibrate_batchnorm(model, data, batches=len(data))
            metric, outputs = _metric_and_outputs(model, task, data)
            rows.append(
                {
                    "param": knob.param,
                    "setting": knob.setting,
                    "value": value,
                    "layers": list(knob.layers),
                    "metric": metric,
                    "drop": reference - metric,
                    "distortion": _distortion(outputs, dense_outputs),
                }
            )
            bar.advance()
    return Sensitivity(
        metric_name=task.metric_name,
        dense=reference,
        rows=rows,
        batches=len(data),
        seconds=time.perf_counter() - started,
    )


def _metric_and_outputs(
    model: nn.Module, task: Task, data: Sequence[Any]
) -> tuple[float, list[torch.Tensor | None]]:
    """The task's metric on `data` and, from the same forward passes (a hook on the model),
    every output the metric computed, in order: one pass per change instead of two."""
    outputs: list[torch.Tensor | None] = []
    handle = model.register_forward_hook(lambda _m, _i, out: outputs.append(_output_tensor(out)))
    try:
        metric = float(task.metric(model, data))
    finally:
        handle.remove()
    return metric, outputs


def _output_tensor(out: Any) -> torch.Tensor | None:
    """A model's output as one float tensor: itself, the first of a tuple, or `.logits`."""
    if isinstance(out, tuple | list) and out:
        out = out[0]
    out = getattr(out, "logits", out)
    return out.detach().float() if isinstance(out, torch.Tensor) else None


def _distortion(
    outputs: Sequence[torch.Tensor | None], dense: Sequence[torch.Tensor | None]
) -> float | None:
    """Sum of squared output changes over the dense outputs' sum of squares."""
    if any(
        o is None or d is None or o.shape != d.shape for o, d in zip(outputs, dense, strict=True)
    ):
        return None
    error = sum(float(((o - d) ** 2).sum()) for o, d in zip(outputs, dense, strict=True))  # type: ignore[operator]
    energy = sum(float((d**2).sum()) for d in dense)  # type: ignore[operator]
    return error / energy if energy > 0 else None


def sensitivity_path(
    model: str, task: Task, knobs: Sequence[Knob], round_to: int | None, batches: int
) -> Path:
    """Where the sensitivity of `model` for one task, space and slice is cached."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    key = space_key(knobs, round_to)
    return cache_dir() / "sensitivity" / safe / f"{task.name}-{key}-b{batches}.json"


def sensitivity_for(
    dense: nn.Module,
    task: Task,
    knobs: Sequence[Knob],
    *,
    model: str,
    round_to: int | None = None,
    batches: int = DEFAULT_BATCHES,
    refresh: bool = False,
    show_progress: bool = False,
) -> tuple[Sensitivity, Path]:
    """The cached sensitivity of a model for a task and space, measured on first use.

    Args:
        dense: the dense model.
        task: its task.
        knobs: the space's knobs for the model.
        model: the model's label (the cache folder).
        round_to: the space's channel multiple.
        batches: training batches in the slice.
        refresh: measure again even when cached.
        show_progress: draw a progress bar while measuring.

    Returns:
        (the sensitivity, its cache file).
    """
    path = sensitivity_path(model, task, knobs, round_to, batches)
    if not refresh and path.is_file():
        try:
            return Sensitivity.from_json(path.read_text()), path
        except (ValueError, TypeError, KeyError):
            pass  # unreadable or another version: measured again below
    result = measure_sensitivity(
        dense, task, knobs, round_to=round_to, batches=batches, show_progress=show_progress
    )
    write_atomic(path, result.to_json().encode())
    return result, path
