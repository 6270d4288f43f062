"""The ask/tell loop of one search process: a plan per trial, scored and told, or failed."""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from typing import Any

import optuna
import torch

from autocompress.optimize.early_stop import EarlyStopper
from autocompress.optimize.heartbeat import fail_stale_trials, heartbeat
from autocompress.optimize.objectives import SearchContext, constraint_values, evaluate_plan
from autocompress.optimize.polish import Polisher
from autocompress.optimize.progress import SearchProgress
from autocompress.optimize.record import violations
from autocompress.optimize.refine import POLISH_STEPS, Refiner
from autocompress.optimize.study import OBJECTIVES
from autocompress.space.sample import plan_from_trial

WORKER = f"{platform.node()}:{os.getpid()}"  # which process ran a trial, for many-machine runs
_BOOKKEEPING = frozenset(
    {"worker", "warm_start", "retry_of", "duplicate_of", "fail_reason", "polished_from"}
)
_COMPLETE, _PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
_WAITING = optuna.trial.TrialState.WAITING


def run_trials(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    ctx: SearchContext,
    trials: int,
    timeout_s: float | None,
    show_progress: bool,
    notes: list[str],
) -> tuple[int, int, int]:
    """The ask/tell loop: one plan per trial; a plan already scored is told again, not re-run.

    Each trial keeps a heartbeat while it runs; before each trial, trials whose worker died
    are failed and queued again (a queued trial is the next one asked for). With early
    stopping, a trial stopped at a rung is told PRUNED; a plan stopped before and drawn
    again is told PRUNED again with the first one's figures (`duplicate_of`), not re-run:
    the trial that dominated it is still in the study. Once no plan is queued, the context's
    refiner (if any) queues the next one, except in the last trials, where its polisher (if
    any) queues a plan to fine-tune for longer (`optimize.polish`; a polished trial is never
    stopped early).

    Returns:
        Trials run, failed, and stopped early (included in run).
    """
    started = time.monotonic()
    run = failed = stopped = 0
    stopper = None
    refiner = ctx.refiner
    if ctx.early_stop:
        floor = None
        if ctx.budget.max_drop is not None:
            floor = ctx.baseline.accuracy - ctx.budget.max_drop
        stopper = EarlyStopper(study, floor=floor)
    with SearchProgress(total=trials, enabled=show_progress, notes=notes) as progress:
        for index in range(trials):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                break
            for number in fail_stale_trials(study, storage):
                progress.trial_failed(f"#{number}: its worker died; queued again")
            # other workers may have scored plans meanwhile
            seen = _scored_plans(study, stopped=ctx.early_stop)
            polisher = ctx.polisher
            if polisher is not None and trials - index <= polisher.trials:
                _queue_next(study, polisher)
            if refiner is not None:
                try:
                    _queue_next(study, refiner)
                except Exception as exc:  # the sampler goes on; the search does not stop
                    progress.note(f"no more refinements: {failure_reason(exc)}")
                    refiner = None
            with warnings.catch_warnings():  # we keep the heartbeats ourselves (heartbeat.py)
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = study.ask()
            trial.set_user_attr("worker", WORKER)
            try:
                with heartbeat(storage, trial._trial_id):
                    plan = plan_from_trial(trial, ctx.knobs, round_to=ctx.round_to)
                    steps = trial.user_attrs.get(POLISH_STEPS)
                    key = _plan_key(plan.key(), steps)
                    if key in seen:
                        figures = {  # its figures, not who ran it or why it was queued
                            k: v for k, v in seen[key].user_attrs.items() if k not in _BOOKKEEPING
                        }
                        figures["duplicate_of"] = seen[key].number
                    else:  # a polished trial is not stopped early: it was chosen to finish
                        figures = evaluate_plan(
                            ctx, plan, stopper=None if steps else stopper, steps=steps
                        )
                        figures["plan"] = plan.to_dict()
                stopped += _tell(study, trial, ctx, figures, progress)
            except KeyboardInterrupt:
                _record_failure(study, trial, "interrupted (Ctrl-C)")
                raise
            except Exception as exc:  # any failure of one plan is recorded and the search goes on
                reason = failure_reason(exc)
                _record_failure(study, trial, reason)
                failed += 1
                progress.trial_failed(reason)
            run += 1
    return run, failed, stopped


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    ctx: SearchContext,
    figures: dict[str, Any],
    progress: SearchProgress,
) -> bool:
    """Record a scored trial's figures and tell it; True when it was stopped early (PRUNED)."""
    for name, value in figures.items():
        trial.set_user_attr(name, value)
    if "stopped_at_step" in figures:
        study.tell(trial, state=_PRUNED)
        progress.trial_stopped(figures)
        return True
    for name, value in constraint_values(ctx.budget, ctx.baseline, figures).items():
        trial.set_constraint(name, value)
    frozen = study.tell(trial, [figures[o] for o in OBJECTIVES])
    progress.trial_done(figures, feasible=not violations(frozen))
    return False


def _queue_next(study: optuna.Study, chooser: Refiner | Polisher) -> None:
    """Once no plan is queued, queue the chooser's next plan, if any: a refinement
    (`optimize.refine`) or a plan to polish (`optimize.polish`)."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == _WAITING for t in trials):
        return
    chosen = chooser.next(trials)
    if chosen is not None:
        study.enqueue_trial(chosen.params, user_attrs=chosen.user_attrs())


def _plan_key(key: str, polish_steps: int | None) -> str:
    """A scored plan's key: its plan's (`Plan.key`), and the steps of a polished trial's
    fine-tune (a polished plan is another result of the same plan)."""
    return key if polish_steps is None else f"{key}@{polish_steps}"


def _scored_plans(
    study: optuna.Study, *, stopped: bool = False
) -> dict[str, optuna.trial.FrozenTrial]:
    """Scored trials by plan (sorted JSON), the first completed one for each plan.

    Args:
        study: the study.
        stopped: also plans whose trial was stopped early (PRUNED), where no completed
            trial has the plan: with early stopping on, they are not fine-tuned again.
    """
    seen: dict[str, optuna.trial.FrozenTrial] = {}
    states = (_COMPLETE, _PRUNED) if stopped else (_COMPLETE,)
    trials = study.get_trials(deepcopy=False, states=states)
    for t in sorted(trials, key=lambda t: (t.state == _PRUNED, t.number)):
        if "plan" in t.user_attrs and (t.state != _PRUNED or "stopped_at_step" in t.user_attrs):
            seen.setdefault(
                _plan_key(
                    json.dumps(t.user_attrs["plan"], sort_keys=True),
                    t.user_attrs.get(POLISH_STEPS),
                ),
                t,
            )
    return seen


def failure_reason(exc: BaseException) -> str:
    """One line saying why a trial failed, for `show` and the report."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        return f"out of memory ({type(exc).__name__}: {detail[:200]})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _record_failure(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
