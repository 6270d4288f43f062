"""Profile a model on a target: kernel lookup tables and whole-plan calibration measurements.

Two kinds of measurement, both with the target's timing protocol:
1. Lookup tables: every Conv/Linear geometry the search space can produce (the dense layers
   and the halves of factorized ones), timed alone at a grid of channel counts (the smallest,
   middle and largest the space allows on each axis), fp32 eager.
2. Calibration: random plans from the space, built and deployed for real (int8 kernels
   compiled) and timed as a ratio to the dense model, interleaved. The predictor learns from
   these how the per-kernel sums turn into a whole model's latency: the other layers,
   per-call overhead, fusion and the speed of int8 and bf16 kernels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.config import Plan
from autocompress.errors import UserInputError
from autocompress.hardware.shapes import FP32, ModelShapes, build_layer, example_input
from autocompress.hardware.targets import Target
from autocompress.hardware.timing import Measurement
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob
from autocompress.task import Task

log = logging.getLogger(__name__)

PROFILE_VERSION = 2  # 2: layers record their output size
DEFAULT_CALIBRATION_PLANS = 40
# Per lookup-table entry: few rounds, since entries are many and each is small and steady.
LUT_ROUNDS = 3


@dataclass(frozen=True)
class Profile:
    """Everything measured to fit a latency predictor for one model on one target.

    Args:
        model: the model's label (zoo name or factory).
        fingerprint: the target's fingerprint when measured.
        batch_size: the batch size everything was timed at.
        space_key: hash of the search space's knobs the profile covers.
        shapes: `ModelShapes.to_dict()`.
        lut: `{"geometry", "cin", "cout", "out_elems", "ms"}` per lookup-table entry (fp32
            eager; out_elems per sample).
        calibration: `{"plan", "ratio"}` per measured plan (ratio to the dense model).
        dense_ms: the dense model's median latency during profiling.
        seconds: wall time profiling took.
    """

    model: str
    fingerprint: dict[str, str]
    batch_size: int
    space_key: str
    shapes: dict[str, Any]
    lut: list[dict[str, Any]]
    calibration: list[dict[str, Any]]
    dense_ms: float
    seconds: float

    def to_json(self) -> str:
        """The profile as JSON (with a format version)."""
        return json.dumps({"version": PROFILE_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Parse `to_json`'s output (plain JSON, nothing evaluated).

        Raises:
            ValueError: not a profile of this version.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != PROFILE_VERSION:
            raise ValueError(f"not a version-{PROFILE_VERSION} latency profile")
        return cls(**data)


def space_key(knobs: Sequence[Knob], round_to: int | None) -> str:
    """A short hash of what a search space lets vary (knob names and choices)."""
    text = json.dumps([round_to, [(k.param, list(k.choices)) for k in knobs]])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def profile_path(cache_root: Path, model: str, target: Target, batch: int, key: str) -> Path:
    """Where the profile of `model` on `target` for one space and batch size is cached."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return cache_root / "profiles" / safe / f"{target.fingerprint_id()}-b{batch}-{key}.json"


def random_plans(
    knobs: Sequence[Knob],
    count: int,
    *,
    seed: int,
    round_to: int | None = None,
    keep_float_plans: bool = False,
) -> list[Plan]:
    """`count` plans drawn uniformly from the knobs' choices (as a random-sampler trial would).

    Args:
        knobs: the space's knobs for the model.
        count: how many plans.
        seed: random seed; the same seed gives the same plans.
        round_to: channel multiple for pruning.
        keep_float_plans: in a space with bit-widths, every fourth plan (from the first) keeps
            all weights at 32 bits: almost every random mixed-precision plan deploys compiled,
            and float plans (which deploy eagerly) must be measured too.

    Returns:
        The plans (duplicates possible in tiny spaces).
    """
    rng = random.Random(seed)
    has_bits = any(k.setting == "weight_bits" for k in knobs)
    float_every = 4 if keep_float_plans and has_bits else 0
    plans = []
    for i in range(count):
        params = {k.param: rng.choice(list(k.choices)) for k in knobs}
        if float_every and i % float_every == 0:
            params.update({k.param: 32 for k in knobs if k.setting == "weight_bits"})
        plans.append(plan_from_trial(optuna.trial.FixedTrial(params), knobs, round_to=round_to))
    return plans


def lut_grid(
    shapes: ModelShapes, knobs: Sequence[Knob], round_to: int | None
) -> dict[str, tuple[list[int], list[int]]]:
    """The channel counts to time for every geometry the space can produce.

    Every combination of a layer's input keep ratio, output keep ratio and rank is listed;
    each geometry's axes are then cut to the smallest, middle and largest value seen.

    Returns:
        ``{geometry: (cin values, cout values)}``.
    """
    choices: dict[tuple[str, str], list[Any]] = {}
    for knob in knobs:
        for layer in knob.layers:
            choices[(layer, knob.setting)] = list(knob.choices)
    keeps: dict[str, list[float]] = {}
    for layer in shapes.layers:
        if layer.group is not None:
            keeps.setdefault(layer.group, choices.get((layer.name, "keep_ratio"), [1.0]))
    seen: dict[str, tuple[set[int], set[int]]] = {}
    for index, layer in enumerate(shapes.layers):
        outs, ins = [layer.out_features], [layer.in_features]
        if layer.group is not None:
            outs = _counts(shapes, layer.group, keeps[layer.group], round_to)
        if layer.in_group is not None:
            kept_in = _counts(shapes, layer.in_group, keeps[layer.in_group], round_to)
            ins = [shapes.fan_in(layer, kept) for kept in kept_in]
        for cin in ins:
            for cout in outs:
                for rank in choices.get((layer.name, "rank_ratio"), [1.0]):
                    for kernel in shapes.layer_kernels(index, cin, cout, rank, FP32):
                        axes = seen.setdefault(kernel.geometry, (set(), set()))
                        axes[0].add(kernel.cin)
                        axes[1].add(kernel.cout)
    return {g: (_three(cins), _three(couts)) for g, (cins, couts) in seen.items()}


def _counts(
    shapes: ModelShapes, group: str, keeps: Sequence[float], round_to: int | None
) -> list[int]:
    return sorted({shapes.kept(group, k, round_to) for k in keeps})


def _three(values: set[int]) -> list[int]:
    ordered = sorted(values)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})


def measure_plan(
    dense: nn.Module,
    plan: Plan,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
    *,
    rounds: int | None = None,
) -> float:
    """Build a plan's deployable model and time it interleaved with the dense model.

    Latency depends on the layers and kernels, not on the weights' values, so the plan is
    built from the dense weights without fine-tuning.

    Args:
        dense: the dense model (not modified).
        plan: the plan.
        task: gives the example input for tracing and the int8 calibration batches.
        target: where to time it.
        inputs: the input batch to time with.
        rounds: timing rounds; None for the target's default.

    Returns:
        The latency ratio, deployed plan / dense model (median of paired rounds).
    """
    from autocompress.compress.apply import apply

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers kept float are reported by the search itself
        candidate = apply(dense, plan, task.inputs())
        measurement = measure_candidate(candidate, plan, dense, task, target, inputs, rounds=rounds)
    assert measurement.ratio is not None
    return measurement.ratio


def measure_candidate(
    candidate: nn.Module,
    plan: Plan,
    dense: nn.Module,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
    *,
    rounds: int | None = None,
) -> Measurement:
    """Deploy a model built by `apply` on the target (real kernels, in the target's runtime) and
    time it interleaved with `dense`.

    Args:
        candidate: `apply(dense, plan, ...)`, fine-tuned or not (not modified).
        plan: the plan it was built from.
        dense: the reference model.
        task: gives the int8 calibration batches.
        target: where to time it.
        inputs: the input batch to time with.
        rounds: timing rounds; None for the target's default.

    Returns:
        The Measurement; its `ratio` is deployed candidate / dense.
    """
    deployed = target.deploy(candidate, plan, inputs, task.calibration_batches())
    return target.measure(deployed, inputs, reference=dense, rounds=rounds)


def measure_lut(
    grid: dict[str, tuple[list[int], list[int]]],
    target: Target,
    batch: int,
    *,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Time every (geometry, cin, cout) point of a grid alone, fp32, in the target's runtime.

    Args:
        grid: from `lut_grid`.
        target: where to time.
        batch: batch size.
        progress: a `Bar` to advance per entry, or None.

    Returns:
        `{"geometry", "cin", "cout", "out_elems", "ms"}` per entry.
    """
    entries = []
    for geometry, (cins, couts) in grid.items():
        spec = json.loads(geometry)
        for cin in cins:
            x = example_input(spec, cin, batch)
            for cout in couts:
                layer = build_layer(spec, cin, cout)
                ms = target.measure(layer, (x,), rounds=LUT_ROUNDS).median_ms
                with torch.no_grad():
                    out_elems = layer(x)[0].numel()
                entries.append(
                    {
                        "geometry": geometry,
                        "cin": cin,
                        "cout": cout,
                        "out_elems": out_elems,
                        "ms": ms,
                    }
                )
                if progress is not None:
                    progress.advance()
    return entries


def profile_model(
    dense: nn.Module,
    task: Task,
    target: Target,
    *,
    model: str,
    shapes: ModelShapes,
    knobs: Sequence[Knob],
    round_to: int | None,
    inputs: tuple[torch.Tensor, ...],
    calibration_plans: int = DEFAULT_CALIBRATION_PLANS,
    seed: int = 0,
    show_progress: bool = True,
) -> Profile:
    """Measure what a latency predictor for this model, space and target is fitted on.

    Args:
        dense: the dense model.
        task: its task (example input, int8 calibration batches).
        target: where to measure.
        model: the model's label, stored in the profile.
        shapes: `ModelShapes.from_model(dense, ...)`.
        knobs: the search space's knobs for the model.
        round_to: the space's channel multiple.
        inputs: the input batch latency is measured with (its batch size is the profile's).
        calibration_plans: random plans from the space to build and time whole.
        seed: seed for drawing those plans.
        show_progress: draw a progress bar on stderr.

    Returns:
        The Profile (not yet saved).
    """
    if calibration_plans < 1:
        raise UserInputError(f"calibration plans must be at least 1, got {calibration_plans}")
    started = time.monotonic()
    batch = batch_size_of(inputs)
    grid = lut_grid(shapes, knobs, round_to)
    points = sum(len(c) * len(o) for c, o in grid.values())
    plans = random_plans(
        knobs, calibration_plans, seed=seed, round_to=round_to, keep_float_plans=True
    )
    with Bar(points + len(plans), enabled=show_progress) as bar:
        bar.describe(f"profile {model}: {points} kernel sizes")
        lut = measure_lut(grid, target, batch, progress=bar)
        dense_ms = target.measure(dense, inputs, rounds=2 * target.rounds).median_ms
        bar.describe(f"profile {model}: {len(plans)} whole plans")
        calibration = []
        for plan in plans:
            try:
                ratio = measure_plan(dense, plan, task, target, inputs)
            except Exception as exc:  # a plan the model cannot take fails its trial, not this
                log.warning("calibration plan skipped: %s: %s", type(exc).__name__, exc)
            else:
                calibration.append({"plan": plan.to_dict(), "ratio": ratio})
            bar.advance()
    return Profile(
        model=model,
        fingerprint=target.fingerprint(),
        batch_size=batch,
        space_key=space_key(knobs, round_to),
        shapes=shapes.to_dict(),
        lut=lut,
        calibration=calibration,
        dense_ms=dense_ms,
        seconds=time.monotonic() - started,
    )


def batch_size_of(inputs: tuple[torch.Tensor, ...]) -> int:
    """The batch size of a model's input batch (1 for a scalar first input)."""
    return int(inputs[0].shape[0]) if inputs[0].dim() else 1


class Bar:
    """A rich progress bar on stderr (or nothing when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("profile", total=total)

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)

    def advance(self) -> None:
        self._progress.advance(self._task)
