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

from autocompress.config import DEFAULT_FINETUNE_STEPS, Budget, Plan
from autocompress.errors import StudyError, UnknownNameError, UserInputError
from autocompress.task import Task

PICKS = ("fastest", "smallest", "most-accurate")


def _feasible(candidate: dict[str, Any], trial: optuna.trial.FrozenTrial, budget: Budget) -> bool:
    """Within every budget; latency judged by the re-measured `measured_ms` where a trial has it."""
    violations = dict(candidate["violations"])
    measured = trial.user_attrs.get("measured_ms")
    if measured is not None and budget.latency_ms is not None:
        violations.pop("latency_ms", None)
        if measured > budget.latency_ms:
            violations["latency_ms"] = measured - budget.latency_ms
    return not violations


def _latency(candidate: dict[str, Any], trial: optuna.trial.FrozenTrial) -> float:
    measured = trial.user_attrs.get("measured_ms")
    return float(measured if measured is not None else candidate["measured_ms"])


def select_trial(
    study: optuna.Study, *, trial: int | None = None, pick: str | None = None
) -> optuna.trial.FrozenTrial:
    """The trial `--trial N` names, or the feasible front candidate `--pick` chooses.

    Args:
        study: an existing study.
        trial: a trial number; exactly one of `trial` and `pick`.
        pick: "fastest", "smallest" or "most-accurate": on the front of the trials that meet
            every budget, latency taken as re-measured where a trial records `measured_ms`.

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
    from autocompress.optimize.pareto import candidate, non_dominated

    budget = Budget(**(study.user_attrs.get("budget") or {}))
    baseline = study.user_attrs.get("baseline") or {}
    done = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [
        (c, t)
        for t in done
        if "plan" in t.user_attrs
        for c in [candidate(t, baseline)]
        if _feasible(c, t, budget)
    ]
    # The front of the feasible trials, with latency as re-measured where a trial has it.
    points = [(c["accuracy"], _latency(c, t), c["size_bytes"]) for c, t in feasible]
    pool = [feasible[i] for i in non_dominated(points)]
    if not pool:
        raise UserInputError(
            f"study {name!r} has no candidate within its budgets ({budget.describe()}) to pick "
            f"the {pick} from; choose one with --trial N (see autocompress show --study {name})"
        )
    if pick == "fastest":
        best = min(pool, key=lambda p: (_latency(*p), -p[0]["accuracy"], p[0]["trial"]))
    elif pick == "smallest":
        best = min(pool, key=lambda p: (p[0]["size_bytes"], -p[0]["accuracy"], p[0]["trial"]))
    else:
        best = min(pool, key=lambda p: (-p[0]["accuracy"], _latency(*p), p[0]["trial"]))
    return best[1]


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

    identity = study.user_attrs.get("identity") or {}
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
    train_threads: int = 1,
) -> Rebuilt:
    """Rebuild a trial's model the way the search built it, and its deployable form.

    Args:
        study: the study the trial belongs to.
        trial: a completed trial (see `select_trial`).
        model: `--model` for a model outside the zoo.
        task: `--task` for a task outside the zoo.
        train_threads: threads for the fine-tune.

    Returns:
        The rebuilt models and figures.
    """
    from autocompress.compress.apply import apply, deploy
    from autocompress.evaluate.finetune import finetune
    from autocompress.hardware.timing import torch_threads
    from autocompress.optimize.latency import batch_inputs
    from autocompress.optimize.objectives import fixed_data_order

    dense, the_task = resolve_study_model(study, model=model, task=task)
    identity = study.user_attrs.get("identity") or {}
    plan = Plan.from_dict(trial.user_attrs["plan"])
    steps = int(study.user_attrs.get("finetune_steps", DEFAULT_FINETUNE_STEPS))
    if not trial.user_attrs.get("finetuned", True):
        steps = 0  # the search judged it hopeless and only recalibrated BatchNorm
    batch_size = int(identity.get("batch_size", 1))
    latency_inputs = batch_inputs(the_task, batch_size)
    candidate = apply(dense, plan, the_task.inputs())
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
        candidate_accuracy=accuracy,
    )
