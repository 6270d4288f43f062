"""A model's latency predictor on a target: from the cache, else profiled and cached; and its
accuracy on freshly measured plans (`autocompress profile --check N`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocompress.cache import cache_dir, write_atomic
from autocompress.config import Plan
from autocompress.errors import PlanError, UserInputError
from autocompress.hardware.targets import Target
from autocompress.latency.predictor import LatencyPredictor
from autocompress.latency.profile import (
    DEFAULT_CALIBRATION_PLANS,
    PROFILE_SECONDS,
    Bar,
    OlderProfileError,
    Profile,
    batch_size_of,
    profile_model,
    profile_path,
    random_plans,
    space_key,
    time_plan,
)
from autocompress.latency.shapes import ModelShapes
from autocompress.space.discover import LayerInfo
from autocompress.space.spec import Knob
from autocompress.task import Task

log = logging.getLogger(__name__)

# `check_predictor` draws up to this many times the plans asked for to find fresh ones.
DRAW_FACTOR = 20


def load_profile(path: Path) -> Profile | None:
    """The profile cached at `path`; None when absent, or unreadable (with a warning)."""
    if not path.exists():
        return None
    try:
        return Profile.from_json(path.read_text())
    except OlderProfileError as exc:
        log.warning("latency profile %s is %s; profiling again", path, exc)
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("latency profile %s is unreadable (%s); profiling again", path, exc)
        return None


def predictor_for(
    dense: nn.Module,
    task: Task,
    target: Target,
    *,
    model: str,
    layers: Sequence[LayerInfo],
    knobs: Sequence[Knob],
    round_to: int | None,
    inputs: tuple[torch.Tensor, ...],
    refresh: bool = False,
    calibration_plans: int | None = None,
    show_progress: bool = True,
) -> tuple[LatencyPredictor, Path]:
    """The latency predictor for a model and search space on a target.

    Loaded from the cache (one file per model, target fingerprint, batch size and space)
    unless `refresh`; otherwise profiled on the target now and cached.

    Args:
        dense: the dense model.
        task: its task.
        target: the target.
        model: the model's label (names the cache folder).
        layers: `discover(dense, ...)`.
        knobs: the search space's knobs for the model.
        round_to: the space's channel multiple.
        inputs: the input batch latency is measured with.
        refresh: profile again even when a cached profile exists.
        calibration_plans: random plans to time whole; None: 40 for spaces with bit-widths,
            else 30, as many of them as fit in `PROFILE_SECONDS` with the uniform plans.
        show_progress: draw a progress bar while profiling.

    Returns:
        (the predictor, the profile's path).
    """
    batch = batch_size_of(inputs)
    path = profile_path(cache_dir(), model, target, batch, space_key(knobs, round_to))
    profile = None if refresh else load_profile(path)
    if profile is not None:
        try:
            missing = ModelShapes.from_dict(profile.shapes).missing(layers)
            if not missing:
                return LatencyPredictor(profile), path
            # written before subclassed layers were recognised: it left them out
            log.warning(
                "latency profile %s leaves out %d layer(s) of the model (%s); profiling again",
                path, len(missing), ", ".join(missing[:3]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, PlanError) as exc:
            log.warning("latency profile %s does not fit (%s); profiling again", path, exc)
    max_seconds = None
    if calibration_plans is None:  # the default number, within the default time
        has_bits = any(k.setting == "weight_bits" for k in knobs)
        calibration_plans = DEFAULT_CALIBRATION_PLANS if has_bits else 30
        max_seconds = PROFILE_SECONDS
    profile = profile_model(
        dense,
        task,
        target,
        model=model,
        shapes=ModelShapes.from_model(dense, task.inputs(), layers, runtime=target.runtime),
        knobs=knobs,
        round_to=round_to,
        inputs=inputs,
        calibration_plans=calibration_plans,
        max_seconds=max_seconds,
        show_progress=show_progress,
    )
    write_atomic(path, profile.to_json().encode())
    return LatencyPredictor(profile), path


@dataclass(frozen=True)
class PredictorCheck:
    """A predictor's accuracy on plans it never saw, each built and measured.

    Args:
        predicted: predicted latency ratios to the dense model.
        measured: measured ratios, same order.
        predict_ms: the slowest single prediction, in milliseconds.
    """

    predicted: list[float]
    measured: list[float]
    predict_ms: float

    @property
    def errors(self) -> np.ndarray:
        """Relative errors (predicted - measured) / measured."""
        p, m = np.asarray(self.predicted), np.asarray(self.measured)
        return (p - m) / m

    def within(self, tolerance: float = 0.10) -> float:
        """Fraction of plans predicted within +-tolerance of measured."""
        return float(np.mean(np.abs(self.errors) <= tolerance))

    def mape(self) -> float:
        """Mean absolute percentage error, as a fraction."""
        return float(np.mean(np.abs(self.errors)))

    def spearman(self) -> float:
        """Rank correlation of predicted and measured (1.0 for fewer than 2 distinct plans)."""
        from scipy.stats import spearmanr

        if len(set(self.measured)) < 2 or len(set(self.predicted)) < 2:
            return 1.0
        return float(spearmanr(self.predicted, self.measured).statistic)

    def line(self) -> str:
        """`within10=0.93 mape=0.045 spearman=0.96 n=30`."""
        return (
            f"within10={self.within():.2f} mape={self.mape():.3f} "
            f"spearman={self.spearman():.2f} n={len(self.measured)}"
        )


def check_predictor(
    predictor: LatencyPredictor,
    dense: nn.Module,
    task: Task,
    target: Target,
    *,
    knobs: Sequence[Knob],
    round_to: int | None,
    inputs: tuple[torch.Tensor, ...],
    plans: int,
    seed: int = 1,
    show_progress: bool = True,
) -> PredictorCheck:
    """Draw fresh random plans, build and measure each, then predict it.

    The plans come from another seed than the profile's; a plan the profile timed, or one
    drawn before, is skipped, so none was used in fitting and each counts once. A compiled
    plan is predicted in the frame it was measured in: its ratio to the dense model's twin,
    carried by the twin's ratio to the dense model as this process timed it
    (`LatencyPredictor.predict_ratio`). That ratio moves between processes: on
    effnet-fmnist (ONNX Runtime, batch 1) 30 fresh plans, each measured twice back to back,
    repeated within 10% for 29 (MAPE 2.9%), while a profile from another hour predicted its
    compiled plans 11% low in the median, the profile's own ratio carried. A small space
    may hold fewer such plans than asked for (minilm's tied transformer space has 96 in all):
    the check then measures those it found in `DRAW_FACTOR` times as many draws.

    Args:
        predictor: the fitted predictor.
        dense: the dense model.
        task: its task.
        target: the target the predictor was profiled on.
        knobs: the search space's knobs.
        round_to: the space's channel multiple.
        inputs: the input batch to time with.
        plans: how many plans.
        seed: seed for drawing them (the profile uses 0).
        show_progress: draw a progress bar.

    Returns:
        The predicted and measured ratios.
    """
    if plans < 1:
        raise UserInputError(f"--check needs at least 1 plan, got {plans}")
    draws = random_plans(
        knobs, DRAW_FACTOR * plans, seed=1000 + seed, round_to=round_to, eager_plans=True
    )
    seen = {Plan.from_dict(point["plan"]).key() for point in predictor.profile.calibration}
    drawn: list[Plan] = []
    for plan in draws:
        key = plan.key()
        if key not in seen:
            drawn.append(plan)
            seen.add(key)
            if len(drawn) == plans:
                break
    if len(drawn) < plans:
        log.warning(
            "the space gave %d plans the profile did not time in %d draws; checking those",
            len(drawn), len(draws),
        )  # fmt: skip
    predicted, measured, slowest = [], [], 0.0
    with Bar(len(drawn), enabled=show_progress) as bar:
        bar.describe(f"check: {len(drawn)} fresh plans")
        for plan in drawn:
            timed = time_plan(dense, plan, task, target, inputs)
            assert timed.ratio is not None
            measured.append(timed.ratio)
            start = time.perf_counter()
            # in the frame it was measured in: this process's twin (`LatencyPredictor`)
            predicted.append(predictor.predict_ratio(plan, to_dense=timed.to_dense))
            slowest = max(slowest, (time.perf_counter() - start) * 1e3)
            bar.advance()
    return PredictorCheck(predicted=predicted, measured=measured, predict_ms=slowest)
