"""Choose a study's trial and rebuild its model: a trial stores the plan, never the weights.

The rebuild replays the search's recipe: the dense model and task from the study's identity,
`apply(dense, plan)`, the same number of distillation steps on the same data order
(`objectives.fixed_data_order`), then the deployable build with real kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.config import DEFAULT_FINETUNE_STEPS, Budget, Plan, drop_over
from autocompress.errors import StudyError, UnknownNameError, UserInputError
from autocompress.optimize.record import measured_ms, read, reference_to_dense
from autocompress.task import Task

PICKS = ("fastest", "smallest", "most-accurate")


def select_trial(
    study: optuna.Study, *, trial: int | None = None, pick: str | None = None
) -> optuna.trial.FrozenTrial:
    """The trial `--trial N` names, or the feasible front candidate `--pick` chooses.

    Args:
        study: an existing study.
        trial: a trial number, any completed trial; exactly one of `trial` and `pick`.
        pick: "fastest", "smallest" or "most-accurate" among the front's candidates that meet
            every budget, as `autocompress show` lists them (latency as measured by the verify
            step wherever it was). A study without `--max-drop` picks the fastest or smallest
            among those within the floor its search refined to (`refine.DEFAULT_DROP`, 1
            point), where one is: its front runs down to plans no user deploys (README's
            demo search, 42.22% at its fastest).

    Returns:
        The completed trial.

    Raises:
        UserInputError: neither or both given, an unknown pick, a trial that does not exist or
            did not complete, or no feasible candidate to pick from.
    """
    name = study.study_name
    if (trial is None) == (pick is None):
        raise UserInputError("give exactly one of --trial N or --pick " + "|".join(PICKS))
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial is not None:
        if trial not in trials:
            known = f"0-{max(trials)}" if trials else "none yet"
            raise UserInputError(f"study {name!r} has no trial {trial} (its trials: {known})")
        chosen = trials[trial]
        if chosen.state != optuna.trial.TrialState.COMPLETE or "plan" not in chosen.user_attrs:
            attrs = chosen.user_attrs
            reason = attrs.get("fail_reason") or chosen.state.name.lower()
            if "stop_reason" in attrs:
                reason = f"stopped early: {attrs['stop_reason']}"
            raise UserInputError(
                f"trial {trial} of study {name!r} did not complete ({reason}); choose a completed "
                f"trial: autocompress show --study {name}"
            )
        return chosen
    if pick not in PICKS:
        raise UnknownNameError("pick", str(pick), list(PICKS))
    pool, _ = _pick_pool(study, pick)
    if pick == "fastest":
        best = min(pool, key=lambda c: (c["latency_ms"], -c["accuracy"], c["trial"]))
    elif pick == "smallest":
        best = min(pool, key=lambda c: (c["size_bytes"], -c["accuracy"], c["trial"]))
    else:
        best = min(pool, key=lambda c: (-c["accuracy"], c["latency_ms"], c["trial"]))
    return trials[best["trial"]]


def pick_note(study: optuna.Study, pick: str | None) -> str | None:
    """What export says where `--pick` chose among the candidates within the 1-point floor
    only (see `select_trial`); None where it chose among every feasible one."""
    if pick not in ("fastest", "smallest"):
        return None
    pool, feasible = _pick_pool(study, pick)
    if len(pool) == feasible:
        return None
    from autocompress.optimize.refine import DEFAULT_DROP

    return (
        f"the study has no --max-drop: picked the {pick} of the {len(pool)} candidates within "
        f"{100 * DEFAULT_DROP:g} point of the dense accuracy, not of all {feasible} within its "
        "budgets (--trial N exports any of them)"
    )


def _pick_pool(study: optuna.Study, pick: str) -> tuple[list[dict[str, Any]], int]:
    """The front candidates `--pick` chooses among, and how many are feasible in all."""
    from autocompress.optimize.pareto import pareto_front
    from autocompress.optimize.refine import DEFAULT_DROP

    name = study.study_name
    pool = [c for c in pareto_front(study) if c["feasible"]]
    budget = read(study).budget or Budget()
    if not pool:
        raise UserInputError(
            f"study {name!r} has no candidate within its budgets ({budget.describe()}) to pick "
            f"the {pick} from; choose one with --trial N (see autocompress show --study {name})"
        )
    feasible = len(pool)
    if pick != "most-accurate" and budget.max_drop is None:
        held = [
            c for c in pool if drop_over(c["baseline_accuracy"], c["accuracy"], DEFAULT_DROP) <= 0
        ]
        pool = held or pool
    return pool, feasible


@dataclass(frozen=True)
class StudyFigures:
    """What the study knows of a trial: its latency, how it got it, and its place on the front.

    Attributes:
        latency_ms: measured where the search or its verify step measured it, else predicted.
        measured: whether `latency_ms` was measured.
        on_front: whether the trial is on the study's Pareto front.
        to_dense: the ratio the measured latency was carried to the dense model by
            (`record.reference_to_dense`); None where not measured or not recorded.
    """

    latency_ms: float
    measured: bool
    on_front: bool
    to_dense: float | None = None

    def notes(self, trial: int) -> list[str]:
        """What a user exporting this trial should know (nothing for a measured front candidate).

        Args:
            trial: the trial's number, for the message.

        Returns:
            Zero to two sentences.
        """
        notes = []
        if not self.on_front:
            notes.append(
                f"trial {trial} is not on the study's Pareto front (another candidate is at "
                "least as accurate, fast and small)"
            )
        if not self.measured:
            notes.append(
                f"the study never measured trial {trial}'s latency (only the front is measured "
                f"after a search): {self.latency_ms:.3f} ms was predicted"
            )
        return notes


def study_figures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> StudyFigures:
    """A completed trial's latency as the study knows it, and whether it is on the front.

    Args:
        study: the study.
        trial: a completed trial of it.

    Returns:
        The figures; latency measured where the search or its verify step measured it.
    """
    from autocompress.optimize.pareto import pareto_front

    the_record = read(study)
    measured = measured_ms(trial, the_record)
    on_front = any(c["trial"] == trial.number for c in pareto_front(study, the_record))
    return StudyFigures(
        latency_ms=float(measured if measured is not None else trial.user_attrs["latency_ms"]),
        measured=measured is not None,
        on_front=on_front,
        to_dense=reference_to_dense(trial, the_record),
    )


@dataclass
class Rebuilt:
    """A trial's model built again: dense, fine-tuned candidate, and the deployable build."""

    plan: Plan
    dense: nn.Module
    task: Task
    candidate: nn.Module
    deployable: nn.Module
    graph: nn.Module
    latency_inputs: tuple[torch.Tensor, ...]
    finetune_steps: int
    train_threads: int
    candidate_accuracy: float


def resolve_study_model(
    study: optuna.Study, *, model: str | None = None, task: str | None = None
) -> tuple[nn.Module, Task]:
    """The dense model and task a study was made for, checked against its identity.

    Args:
        study: the study.
        model: `--model` for a model outside the zoo (`pkg.mod:factory`); None: the study's.
        task: `--task` likewise.

    Raises:
        UserInputError: the study's model cannot be found again without `--model`, or the given
            model or task is not the one the study was made for.
    """
    from autocompress import zoo
    from autocompress.resolve import model_label, resolve_model, resolve_task

    identity = read(study).identity
    name = study.study_name
    made_for = identity.get("model")
    if model is None:
        if made_for not in zoo.ZOO:
            raise UserInputError(
                f"study {name!r} was made for model {made_for!r}, which is not in the zoo; "
                "give the same --model pkg.module:factory (and --task) the search was given"
            )
        model = made_for
    elif model_label(model) != made_for:
        raise StudyError(f"study {name!r} was made for model {made_for!r}, not {model!r}")
    resolved = resolve_model(model)
    the_task = resolve_task(task, resolved)
    if identity.get("task") not in (None, the_task.name):
        raise StudyError(
            f"study {name!r} was made for task {identity['task']!r}, not {the_task.name!r}"
        )
    return resolved.model.eval(), the_task


def rebuild(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    *,
    model: str | None = None,
    task: str | None = None,
    train_threads: int | None = None,
) -> Rebuilt:
    """Rebuild a trial's model the way the search built it, and its deployable form.

    Args:
        study: the study the trial belongs to.
        trial: a completed trial (see `select_trial`).
        model: `--model` for a model outside the zoo.
        task: `--task` for a task outside the zoo.
        train_threads: threads for the fine-tune; None: the threads the trial trained with
            (`train_threads` in its record; 1 for trials from before it was recorded), which
            replays its fine-tune exactly.

    Returns:
        The rebuilt models and figures.
    """
    from autocompress.compress.apply import apply, deploy
    from autocompress.evaluate.finetune import finetune
    from autocompress.hardware.timing import torch_threads
    from autocompress.optimize.latency import batch_inputs
    from autocompress.optimize.objectives import fixed_data_order

    dense, the_task = resolve_study_model(study, model=model, task=task)
    the_record = read(study)
    identity = the_record.identity
    plan = Plan.from_dict(trial.user_attrs["plan"])
    # The steps this trial was scored with (a study continued with another --finetune-steps
    # holds trials of both); studies from before trials recorded it kept one study-wide value.
    study_steps = the_record.finetune_steps
    if study_steps is None:
        study_steps = DEFAULT_FINETUNE_STEPS
    steps = int(trial.user_attrs.get("finetune_steps", study_steps))
    if not trial.user_attrs.get("finetuned", True):
        steps = 0  # the search judged it hopeless and only recalibrated BatchNorm
    batch_size = int(identity.get("batch_size", 1))
    latency_inputs = batch_inputs(the_task, batch_size)
    candidate = apply(dense, plan, the_task.inputs())
    if train_threads is None:
        train_threads = int(trial.user_attrs.get("train_threads", 1))
    with torch_threads(train_threads):
        with fixed_data_order(the_task):
            finetune(candidate, dense, the_task, steps=steps)
        accuracy = float(the_task.metric(candidate, the_task.val))
        with fixed_data_order(the_task):
            deployable = deploy(candidate, plan, latency_inputs, the_task.calibration_batches())
    graph = getattr(deployable, "graph_module", deployable)
    assert isinstance(deployable, nn.Module) and isinstance(graph, nn.Module)
    return Rebuilt(
        plan=plan,
        dense=dense,
        task=the_task,
        candidate=candidate,
        deployable=deployable,
        graph=graph,
        latency_inputs=latency_inputs,
        finetune_steps=steps,
        train_threads=train_threads,
        candidate_accuracy=accuracy,
    )
