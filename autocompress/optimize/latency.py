"""`autocompress.profile()`: build a model's latency predictor on a target and check it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autocompress.config import DEFAULT_TARGET
from autocompress.hardware.targets import resolve_target
from autocompress.latency.profiles import PredictorCheck, check_predictor, predictor_for
from autocompress.resolve import model_label, resolve_model, resolve_task
from autocompress.space.discover import discover
from autocompress.space.spec import SearchSpace, load_space, settings_for_methods
from autocompress.task import Task


@dataclass(frozen=True)
class ProfileResult:
    """What `profile` leaves.

    Args:
        path: the cached profile file.
        kernels: lookup-table entries measured.
        plans: whole plans measured for calibration.
        seconds: how long profiling took (when it ran; the cached figure otherwise).
        check: the accuracy on fresh plans, when asked for.
    """

    path: Path
    kernels: int
    plans: int
    seconds: float
    check: PredictorCheck | None


def batch_inputs(task: Task, batch_size: int) -> tuple:
    """The task's example input repeated to `batch_size` (the batch latency is measured at)."""
    from autocompress.errors import UserInputError

    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
    return tuple(x[:1].expand(batch_size, *x.shape[1:]).contiguous() for x in task.inputs())


def profile(
    model: str = "digits-resnet",
    *,
    task: str | Task | None = None,
    target: str = DEFAULT_TARGET,
    threads: int = 1,
    batch_size: int = 1,
    space: str | SearchSpace | None = None,
    methods: Sequence[str] | None = None,
    check: int = 0,
    refresh: bool = False,
    plans: int | None = None,
    show_progress: bool = True,
) -> ProfileResult:
    """Profile a model on a target (or load the cached profile) and optionally check it.

    Args:
        model: a zoo name or `pkg.mod:factory`.
        task: its task (zoo models bring their own).
        target: the target name.
        threads: threads when timing.
        batch_size: the batch size latency is predicted for.
        space: the search space whose plans the predictor must cover (None: the target's).
        methods: restrict the space to these methods, as `search --methods` does.
        check: draw this many fresh plans, build and measure them, and compare.
        refresh: profile again even when a cached profile exists.
        plans: whole plans to time for calibration (None: the default for the space).
        show_progress: draw progress bars.

    Returns:
        Where the profile is, what it holds, and the check's figures.
    """
    hw = resolve_target(target, threads=threads)
    the_space = space if isinstance(space, SearchSpace) else load_space(space or hw.space)
    settings_for_methods(methods)
    resolved = resolve_model(model)
    the_task = resolve_task(task, resolved)
    dense = resolved.model.eval()
    layers = discover(dense, the_task.inputs())
    knobs = the_space.knobs(layers, methods=methods, model=dense)
    hw.check_bits({c for k in knobs if k.setting == "weight_bits" for c in k.choices})
    inputs = batch_inputs(the_task, batch_size)
    predictor, path = predictor_for(
        dense,
        the_task,
        hw,
        model=model_label(model),
        layers=layers,
        knobs=knobs,
        round_to=the_space.round_to,
        inputs=inputs,
        refresh=refresh,
        calibration_plans=plans,
        show_progress=show_progress,
    )
    result = None
    if check:
        result = check_predictor(
            predictor,
            dense,
            the_task,
            hw,
            knobs=knobs,
            round_to=the_space.round_to,
            inputs=inputs,
            plans=check,
            show_progress=show_progress,
        )
    p = predictor.profile
    return ProfileResult(
        path=path, kernels=len(p.lut), plans=len(p.calibration), seconds=p.seconds, check=result
    )
