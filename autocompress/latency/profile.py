"""Profile a model on a target: kernel lookup tables and whole-plan calibration measurements.

Two kinds of measurement, both with the target's timing protocol:
1. Lookup tables: every Conv/Linear geometry the search space can produce (the dense layers,
   the halves of factorized ones, and the attention cores between projections), timed alone
   at a grid of channel counts (the smallest, middle and largest the space allows on each
   axis), in every number format the space lets the layer deploy in: fp32 eager, and the int8
   and bf16 kernels of `latency.kernels`.
2. Calibration: random plans from the space, and the uniform plans a search starts from,
   built and deployed for real (int8 kernels compiled) and timed as a ratio to the dense
   model, interleaved. The predictor learns from these how the per-kernel sums turn into a
   whole model's latency: the other layers, per-call overhead and fusion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.config import Plan
from autocompress.errors import UserInputError
from autocompress.hardware.targets import Target
from autocompress.hardware.timing import Measurement
from autocompress.latency.lut import lut_grid, measure_lut
from autocompress.latency.shapes import ModelShapes
from autocompress.space.sample import plan_from_trial
from autocompress.space.spec import Knob
from autocompress.space.uniform import uniform_plans
from autocompress.task import Task

log = logging.getLogger(__name__)

PROFILE_VERSION = 16  # 3: int8/bf16 tables; 4: int8-free plans run eager; 5: uniform plans;
# 6: compiled int8 plans timed frozen (they were recompiled unfrozen in inference mode);
# 7: compiled plans timed against the compiled dense model (`Target.reference_for`);
# 8: LSTM kernel tables (whole, and unrolled into Linears); 9: plans timed settled
# (`Target.measure_settled`: a third measurement when two disagree); 10: attention cores
# (`latency.attention`); 11: a transformer's int8 layers in ONNX Runtime run its dynamic int8
# (they were static QDQ); 12: a runtime's int8 plans timed against the runtime's int8 dense
# model (`RuntimeTarget.reference_for`); 13: its ratio to the dense model timed alone;
# 14: each calibration plan records that reference's ratio to the dense model (`to_dense`);
# 15: a runtime's float plans timed against its int8 dense model too; 16: against the fp32
# dense model again (beside a large float model the int8 one runs slower: biased low)
DEFAULT_CALIBRATION_PLANS = 40
# A profile with the default number of plans stops drawing random plans when it would run past
# this (a model whose plans compile for half a minute each, e.g. all-MiniLM-L6-v2); it keeps at
# least MIN_CALIBRATION_PLANS random plans and always times the uniform ones.
PROFILE_SECONDS = 540.0
MIN_CALIBRATION_PLANS = 12


@dataclass(frozen=True)
class Profile:
    """Everything measured to fit a latency predictor for one model on one target.

    Args:
        model: the model's label (zoo name or factory).
        fingerprint: the target's fingerprint when measured.
        batch_size: the batch size everything was timed at.
        space_key: hash of the search space's knobs the profile covers.
        shapes: `ModelShapes.to_dict()`.
        lut: `{"geometry", "compute", "cin", "cout", "out_elems", "ms"}` per lookup-table
            entry (out_elems per sample).
        calibration: `{"plan", "ratio", "to_dense"}` per measured plan: its ratio to the dense
            model, and the ratio to the dense model of the reference it was timed against
            (1.0 for the dense model itself; `Target.reference_for`).
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
            OlderProfileError: a profile of another version.
            ValueError: not a profile.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("version"), int):
            raise ValueError(f"not a version-{PROFILE_VERSION} latency profile")
        version = data.pop("version")
        if version != PROFILE_VERSION:
            raise OlderProfileError(
                f"a version-{version} latency profile; this autocompress reads version "
                f"{PROFILE_VERSION}"
            )
        return cls(**data)


class OlderProfileError(ValueError):
    """A profile written by another version of autocompress (`PROFILE_VERSION`)."""


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
    eager_plans: bool = False,
) -> list[Plan]:
    """`count` plans drawn uniformly from the knobs' choices (as a random-sampler trial would).

    Args:
        knobs: the space's knobs for the model.
        count: how many plans.
        seed: random seed; the same seed gives the same plans.
        round_to: channel multiple for pruning.
        eager_plans: in a space with bit-widths, every fourth plan (from the first) has
            no 8-bit weights (they become 32): almost every random mixed-precision plan has an
            int8 layer and deploys compiled, and plans that deploy eagerly must be measured too.

    Returns:
        The plans (duplicates possible in tiny spaces).
    """
    rng = random.Random(seed)
    # Only where the space lets weights stay float (a space may fix them at 8 bits).
    can_float = [k.param for k in knobs if k.setting == "weight_bits" and 32 in k.choices]
    float_every = 4 if eager_plans and can_float else 0
    plans = []
    for i in range(count):
        params = {k.param: rng.choice(list(k.choices)) for k in knobs}
        if float_every and i % float_every == 0:
            params.update({param: 32 for param in can_float if params[param] == 8})
        plans.append(plan_from_trial(optuna.trial.FixedTrial(params), knobs, round_to=round_to))
    return plans


def measure_plan(
    dense: nn.Module,
    plan: Plan,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
    *,
    rounds: int | None = None,
) -> float:
    """The latency ratio, deployed plan / dense model (median of paired rounds); see
    `time_plan`, which gives the whole Measurement."""
    measurement = time_plan(dense, plan, task, target, inputs, rounds=rounds)
    assert measurement.ratio is not None
    return measurement.ratio


def time_plan(
    dense: nn.Module,
    plan: Plan,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
    *,
    rounds: int | None = None,
) -> Measurement:
    """Build a plan's deployable model and time it interleaved with the dense model (or the
    dense model's twin; `measure_candidate`).

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
        The Measurement; its `ratio` is deployed plan / dense model.
    """
    from autocompress.compress.apply import apply

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers kept float are reported by the search itself
        candidate = apply(dense, plan, task.inputs())
        return measure_candidate(candidate, plan, dense, task, target, inputs, rounds=rounds)


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
    time it interleaved with `dense`, settled (`Target.measure_settled`).

    Args:
        candidate: `apply(dense, plan, ...)`, fine-tuned or not (not modified).
        plan: the plan it was built from.
        dense: the reference model.
        task: gives the int8 calibration batches.
        target: where to time it.
        inputs: the input batch to time with.
        rounds: timing rounds; None for the target's default.

    Returns:
        The Measurement; its `ratio` is deployed candidate / dense and its `reference_ms` the
        dense model's latency. Timed against a twin of the dense model that runs like the
        candidate (`Target.reference_for`), both are carried over by the twin's ratio to dense.
    """
    from autocompress.compress.apply import deploy_on

    deployed = deploy_on(target, candidate, plan, inputs, task.calibration_batches())
    reference = target.reference_for(dense, deployed, inputs)
    measurement = target.measure_settled(deployed, inputs, reference=reference.model, rounds=rounds)
    if reference.model is dense:
        return measurement
    assert measurement.ratio is not None and measurement.reference_ms is not None
    return replace(
        measurement,
        ratio=measurement.ratio * reference.to_dense,
        reference_ms=measurement.reference_ms / reference.to_dense,
        to_dense=reference.to_dense,
    )


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
    max_seconds: float | None = None,
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
        max_seconds: stop timing random plans (after `MIN_CALIBRATION_PLANS` of them) once
            the profile, with the uniform plans still to time, would take longer; None: all.
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
    drawn = random_plans(knobs, calibration_plans, seed=seed, round_to=round_to, eager_plans=True)
    # The search starts from the uniform plans (all int8, every group at one keep ratio): they
    # are the extremes random plans rarely reach, and a search's front is often built on them.
    uniform = [
        plan_from_trial(optuna.trial.FixedTrial(params), knobs, round_to=round_to)
        for params in uniform_plans(knobs)
    ]
    with Bar(points + len(drawn) + len(uniform), enabled=show_progress) as bar:
        bar.describe(f"profile {model}: {points} kernel sizes")
        lut = measure_lut(grid, target, batch, progress=bar)
        dense_ms = target.measure(dense, inputs, rounds=2 * target.rounds).median_ms
        bar.describe(f"profile {model}: {len(drawn) + len(uniform)} whole plans")
        calibration: list[dict[str, Any]] = []
        skipped: list[str | None] = []
        plans_started = time.monotonic()
        for done, plan in enumerate(drawn):
            if max_seconds is not None and done >= MIN_CALIBRATION_PLANS:
                per_plan = (time.monotonic() - plans_started) / done
                projected = time.monotonic() - started + per_plan * (len(uniform) + 1)
                if projected > max_seconds:
                    log.info("profile time budget: %d of %d random plans timed", done, len(drawn))
                    for _ in drawn[done:]:
                        bar.advance()
                    break
            skipped.append(_calibrate(calibration, dense, plan, task, target, inputs))
            bar.advance()
        for plan in uniform:
            skipped.append(_calibrate(calibration, dense, plan, task, target, inputs))
            bar.advance()
    reasons = Counter(r for r in skipped if r is not None)
    if reasons:  # one line, not one per plan
        (reason, count), *others = reasons.most_common()
        more = f" ({sum(n for _, n in others)} more for other reasons)" if others else ""
        log.warning(
            "%d of %d calibration plans skipped: %dx %s%s",
            reasons.total(), len(skipped), count, reason, more,
        )  # fmt: skip
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


def _calibrate(
    calibration: list[dict[str, Any]],
    dense: nn.Module,
    plan: Plan,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
) -> str | None:
    """Time one calibration plan and append it; a plan the model cannot take is skipped.

    Returns:
        Why it was skipped, or None when it was timed.
    """
    try:
        timed = time_plan(dense, plan, task, target, inputs)
    except Exception as exc:  # a plan the model cannot take fails its trial, not the profile
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    calibration.append({"plan": plan.to_dict(), "ratio": timed.ratio, "to_dense": timed.to_dense})
    return None


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

    def grow(self, more: int) -> None:
        """Add `more` steps to the bar's total (work found while working)."""
        total = self._progress.tasks[0].total or 0
        self._progress.update(self._task, total=total + more)
