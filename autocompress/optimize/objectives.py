"""One trial's work: build the plan's model, measure it, fine-tune it, score it."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autocompress.compress.apply import apply, bake, deploy_on, plan_notes
from autocompress.compress.program import artifact_size_bytes
from autocompress.compress.size import compressed_size_bytes, size_bytes
from autocompress.config import Budget, Plan, drop_over
from autocompress.evaluate.finetune import TeacherOutputs, finetune
from autocompress.evaluate.metrics import param_count
from autocompress.hardware.targets import Target
from autocompress.hardware.timing import other_cores_busy, torch_threads
from autocompress.latency.predictor import LatencyPredictor
from autocompress.latency.profile import measure_candidate
from autocompress.optimize.early_stop import EarlyStopper, TrialStopped, stopped_figures
from autocompress.optimize.record import Baseline
from autocompress.space.spec import Knob
from autocompress.task import Task

if TYPE_CHECKING:
    from autocompress.optimize.polish import Polisher
    from autocompress.optimize.refine import Refiner

# A plan this far over a latency or size budget is not worth a fine-tune: its accuracy is
# still measured (after BatchNorm recalibration) but the trial is known to be infeasible.
FAR_OVER_BUDGET = 1.5


@dataclass
class SearchContext:
    """Everything a trial needs, prepared once per search."""

    dense: nn.Module
    task: Task
    target: Target
    budget: Budget
    knobs: Sequence[Knob]
    round_to: int | None
    finetune_steps: int
    train_threads: int | None
    latency_inputs: tuple[torch.Tensor, ...]
    baseline: Baseline
    predictor: LatencyPredictor | None = None
    early_stop: bool = False
    # The dense model's outputs per training batch, shared by every trial's fine-tune.
    teacher_outputs: TeacherOutputs | None = None
    # Training batches on which a fine-tune must beat the weights it started from (see
    # `finetune`'s `check`); None: every fine-tune is kept.
    check_batches: Sequence[Any] | None = None
    # Chooses the next plan once the queued ones are run (`optimize.refine`); None: the sampler.
    refiner: Refiner | None = None
    # Chooses the plans a call's last trials fine-tune for longer (`optimize.polish`); None: no
    # such trials.
    polisher: Polisher | None = None

    def __post_init__(self) -> None:
        if self.teacher_outputs is None:
            self.teacher_outputs = TeacherOutputs(self.dense)


def measure_baseline(
    dense: nn.Module, task: Task, target: Target, latency_inputs: tuple[torch.Tensor, ...]
) -> Baseline:
    """Measure the dense model: accuracy on the validation split, latency on the target, size.

    The size is that of the dense model's own model.pt2 (BatchNorm folded, as export writes a
    float model), so that a trial's `size_bytes` compares artifact with artifact; a model
    `torch.export` cannot capture counts as `torch.save` writes its state.
    """
    measurement = target.measure(dense, latency_inputs, rounds=2 * target.rounds)
    try:
        size = artifact_size_bytes(dense, Plan(layers={}), latency_inputs)
    except Exception:  # not exportable (see _artifact_size)
        size = size_bytes(dense)
    return Baseline(
        accuracy=float(task.metric(dense, task.val)),
        latency_ms=measurement.median_ms,
        size_bytes=size,
        params=param_count(dense),
        metrics=extra_metrics(dense, task),
    )


def extra_metrics(model: nn.Module, task: Task) -> dict[str, float]:
    """The task's extra figures (`Task.extra_metrics`) of a model on the validation split."""
    return {name: float(metric(model, task.val)) for name, metric in task.extra_metrics.items()}


def constraint_values(
    budget: Budget, baseline: Baseline, figures: dict[str, Any]
) -> dict[str, float]:
    """Budget violations (feasible when every value is <= 0), one per budget that is set."""
    values = {}
    if budget.latency_ms is not None:
        values["latency_ms"] = figures["latency_ms"] - budget.latency_ms
    if budget.size_bytes is not None:
        values["size_bytes"] = float(figures["size_bytes"] - budget.size_bytes)
    if budget.max_drop is not None:
        values["accuracy_drop"] = drop_over(baseline.accuracy, figures["accuracy"], budget.max_drop)
    return values


def training_threads() -> int:
    """Threads for the next fine-tune: every core on a quiet machine, one when others are busy.

    Measured here: with another process on one of the 2 cores, 2-thread training steps run
    3-80x slower than 1-thread ones (OpenMP threads wait on a descheduled sibling), while on
    a quiet machine 2 threads are 1.5x faster.
    """
    cores = os.cpu_count() or 1
    busy = other_cores_busy()
    return cores if busy is not None and busy < 0.3 else 1


# The seed of every trial's fine-tune data order: each plan trains on the same batches, and
# `export` replays a trial's fine-tune exactly (same plan + same steps -> same weights).
FINETUNE_DATA_SEED = 0


def deployed_accuracy(ctx: SearchContext, candidate: nn.Module, plan: Plan) -> float:
    """The fine-tuned candidate's metric as the target's runtime runs it: the graph `export`
    writes (`compress.apply.deploy_on`, calibrated on the same batches), scored on the
    validation data.

    A runtime's int8 is its own, and need not lose what the search's simulated int8 loses: on
    effnet-fmnist, OpenVINO's (NNCF's) int8 of one fine-tuned candidate scored 90.35% where
    the candidate scored 91.00% in PyTorch, and its export was refused for it. Scored here,
    the search ranks, and export checks, what the user deploys.

    Args:
        ctx: the search context (a runtime target).
        candidate: the fine-tuned candidate, built by `apply` (not modified).
        plan: the plan it was built from.

    Returns:
        The task's metric of the deployed model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers kept float are reported by the search itself
        deployed = deploy_as_exported(ctx.target, ctx.task, candidate, plan, ctx.latency_inputs)
    return float(ctx.task.metric(deployed, ctx.task.val))


def deploy_as_exported(
    target: Target, task: Task, candidate: nn.Module, plan: Plan, inputs: tuple[torch.Tensor, ...]
) -> Any:
    """The candidate deployed on the target as a runtime trial is scored and export writes it:
    `compress.apply.deploy_on`, calibrated on the task's calibration batches drawn in a fixed
    order (`fixed_data_order`), so both get the same int8 ranges and export replays the
    trial's accuracy exactly.

    Args:
        target: the target.
        task: gives the calibration batches.
        candidate: the fine-tuned candidate, built by `apply` (not modified).
        plan: the plan it was built from.
        inputs: one input batch at the batch size it runs at.

    Returns:
        The deployed model (`deploy_on`'s).
    """
    with fixed_data_order(task):
        return deploy_on(target, candidate, plan, inputs, task.calibration_batches())


@contextmanager
def fixed_data_order(task: Task, seed: int = FINETUNE_DATA_SEED) -> Iterator[None]:
    """Within the block, the training loader shuffles as if freshly made with `seed`, and
    torch's global random numbers (dropout) start from `seed`; both are restored after.

    A DataLoader's shuffling draws from its generator, so without this a trial's batches would
    depend on every trial before it. Dropout draws from the global generator: unseeded, one
    plan's 60-step fine-tune on effnet-fmnist (dropout 0.2 before its classifier) scored
    91.05% in its trial and 90.10% when export replayed it. Loaders without a generator keep
    their order.
    """
    generator = getattr(task.train, "generator", None)
    has_generator = isinstance(generator, torch.Generator)
    saved = generator.get_state() if has_generator else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if has_generator:
            generator.manual_seed(seed)
        try:
            yield
        finally:
            if has_generator:
                generator.set_state(saved)


def artifact_size(ctx: SearchContext, candidate: nn.Module, plan: Plan) -> int:
    """`size_bytes` of a model built by `apply` (see `_artifact_size`), or its tensors' count."""
    return int(_artifact_size(ctx, candidate, plan, None)["size_bytes"])


def _artifact_size(
    ctx: SearchContext, candidate: nn.Module, plan: Plan, estimate: int | None
) -> dict[str, Any]:
    """`size_bytes`: the bytes of the model.pt2 `autocompress export` would write for this trial.

    Counted after fine-tuning, from the weights export rebuilds (deflated entries depend on
    the values), so the count is the file's size. A model that `torch.export` cannot capture
    has no model.pt2: its tensors are counted instead.
    """
    try:
        size = artifact_size_bytes(candidate, plan, ctx.latency_inputs)
        return {"size_bytes": size, "size_source": "model.pt2"}
    except Exception as exc:  # not exportable: export would refuse it too; count the tensors
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if estimate is None:
            estimate = compressed_size_bytes(bake(candidate), plan)
        return {
            "size_bytes": estimate,
            "size_source": "tensors",
            "size_note": f"tensors only: model.pt2 could not be built ({reason})",
        }


def evaluate_plan(
    ctx: SearchContext,
    plan: Plan,
    *,
    stopper: EarlyStopper | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Build, measure and score one plan.

    Latency is a ratio to the dense model times the study's dense latency: predicted by the
    context's predictor, or else measured (the median of per-round ratios, interleaved with
    the dense model on the target), so that it survives machine drift.

    Args:
        ctx: the search context.
        plan: the plan to score.
        stopper: early stopping (`optimize.early_stop`): the fine-tune is scored at its rungs
            and ended there when the trial is beyond hope. None: no rungs, no stopping.
        steps: distillation steps for this plan (a polished trial's, `optimize.polish`);
            None: the study's (`ctx.finetune_steps`).

    Returns:
        Figures: accuracy, metrics (the task's extra figures, when it has any), latency_ms,
        latency_ratio, predicted_ms or measured_ms, not_applied (what the plan could not
        apply, when there is something; `compress.apply.plan_notes`), size_bytes (the bytes
        of the model.pt2 this trial exports to) with size_source ("model.pt2", or "tensors"
        and a size_note where that cannot be built), params, finetuned, finetune_steps (the
        distillation steps it was given), finetune_s, and
        measurement (the raw timing record) when measured. With a stopper, also
        rung_accuracy (the scores taken at rungs); a stopped trial's figures instead hold its
        accuracy at the rung it stopped at, stopped_at_step and stop_reason, its tensors'
        size, and no extra metrics.
    """
    with plan_notes() as not_applied:
        candidate = apply(ctx.dense, plan, ctx.task.inputs())
    figures: dict[str, Any] = {"params": param_count(candidate)}
    if not_applied:
        figures["not_applied"] = not_applied
    # Tensors only, no container: enough to tell a plan far over a size budget, not to record.
    size_estimate = compressed_size_bytes(bake(candidate), plan)
    if ctx.predictor is not None:
        ratio = ctx.predictor.predict_ratio(plan)
        figures["predicted_ms"] = ratio * ctx.baseline.latency_ms
    else:
        # Latency depends on the architecture and kernels, not on the weights' values, so the
        # deployable build is timed before fine-tuning; a hopeless plan then skips the fine-tune.
        measurement = measure_candidate(
            candidate, plan, ctx.dense, ctx.task, ctx.target, ctx.latency_inputs
        )
        assert measurement.ratio is not None
        ratio = measurement.ratio
        figures["measured_ms"] = ratio * ctx.baseline.latency_ms
        figures["measurement"] = measurement.to_dict()
    figures["latency_ratio"] = ratio
    figures["latency_ms"] = ratio * ctx.baseline.latency_ms
    budget = ctx.budget
    hopeless = (
        budget.latency_ms is not None
        and figures["latency_ms"] > FAR_OVER_BUDGET * budget.latency_ms
    ) or (budget.size_bytes is not None and size_estimate > FAR_OVER_BUDGET * budget.size_bytes)
    steps = 0 if hopeless else (ctx.finetune_steps if steps is None else steps)
    figures["finetune_steps"] = steps  # the recipe export replays for this trial
    scores: dict[str, float] = {}
    on_step = None
    if stopper is not None and steps > 0:
        on_step = stopper.watch(
            candidate,
            ctx.task,
            steps=steps,
            latency_ms=figures["latency_ms"],
            # the model.pt2 is written after the fine-tune; its tensors are most of it
            size_bytes=size_estimate,
            scores=scores,
        )
        figures["rung_accuracy"] = scores  # filled in as the rungs are reached
    # Float sums split across threads round differently: export replays with the same count.
    figures["train_threads"] = threads = ctx.train_threads or training_threads()
    started = time.perf_counter()
    with torch_threads(threads), fixed_data_order(ctx.task):
        try:
            result = finetune(
                candidate,
                ctx.dense,
                ctx.task,
                steps=steps,
                on_step=on_step,
                teacher_outputs=ctx.teacher_outputs,
                check=ctx.check_batches,
            )
        except TrialStopped as stop:
            figures["size_bytes"], figures["size_source"] = size_estimate, "tensors"
            figures["finetuned"] = False
            figures["finetune_s"] = time.perf_counter() - started
            return stopped_figures(figures, stop)
        figures["accuracy"] = float(ctx.task.metric(candidate, ctx.task.val))
        if not math.isfinite(figures["accuracy"]):  # recorded as the trial's failure reason
            raise ValueError(f"the task's metric returned {figures['accuracy']} for this plan")
        if ctx.task.extra_metrics:
            figures["metrics"] = extra_metrics(candidate, ctx.task)
        figures.update(_artifact_size(ctx, candidate, plan, size_estimate))
    if ctx.target.runtime != "pytorch":
        figures["candidate_accuracy"] = figures["accuracy"]
        figures["accuracy"] = deployed_accuracy(ctx, candidate, plan)
    # A fine-tune undone (it scored below the weights it started from on the check batches)
    # leaves the model as 0 steps would: export replays that.
    figures["finetuned"] = steps > 0 and result.kept
    if steps > 0 and not result.kept:
        figures["finetune_undone"] = True
    figures["finetune_s"] = result.seconds
    return figures
