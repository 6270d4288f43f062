"""`--workers N`: N local processes filling one study through its storage.

Optuna's RDB storage is the only coordination: each worker asks the study for trials, and a
queued trial (a warm start, a retry) is handed to exactly one of them. The run's trials are
split between the workers up front, so N workers together run exactly the trials asked for.
Workers on other machines are just more `autocompress search` processes on the same
`--storage` and `--study` (README: "Running on many machines").
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import optuna

from autocompress.errors import UserInputError
from autocompress.optimize.progress import SearchProgress
from autocompress.optimize.record import violations

SEED_STRIDE = 100_003  # workers' sampler seeds lie this far apart, so they propose different plans


def max_workers() -> int:
    """The most local workers: one per core (at least two); each fine-tunes on its own."""
    return max(2, os.cpu_count() or 1)


def split_trials(trials: int, workers: int) -> list[int]:
    """Trials per worker, summing to `trials`; a worker with none is not started.

    Raises:
        UserInputError: fewer than one worker, or more than `max_workers`.
    """
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    if workers > max_workers():
        raise UserInputError(
            f"--workers must be at most {max_workers()} (one per core here), got {workers}; "
            "more searches on other machines can share the study (same --storage and --study)"
        )
    started = min(workers, trials)  # never a list as long as an absurd --workers
    base, extra = divmod(trials, started)
    return [base + (1 if i < extra else 0) for i in range(started)]


def check_picklable(**values: Any) -> None:
    """Worker processes receive the search's arguments by value: names, paths, numbers."""
    import pickle

    for name, value in values.items():
        try:
            pickle.dumps(value)
        except Exception:
            raise UserInputError(
                f"{name} cannot be sent to worker processes ({type(value).__name__}); give it "
                "as a name or pkg.module:factory, or use workers=1"
            ) from None


def _worker_main(
    target: Callable[[Any], tuple[int, int, int]], options: Any, index: int, results: Any
) -> None:
    try:
        results.put((index, *target(options), None))
    except KeyboardInterrupt:
        results.put((index, 0, 0, 0, "interrupted"))
    except BaseException as exc:
        results.put((index, 0, 0, 0, f"{type(exc).__name__}: {exc}"))
        raise


def run_workers(
    target: Callable[[Any], tuple[int, int, int]],
    options: Any,
    *,
    study: optuna.Study,
    workers: int,
    trials: int,
    seed: int,
    train_threads: int | None,
    show_progress: bool,
    notes: list[str],
) -> tuple[int, int, int]:
    """Run `target(options)` (one search's trials, returning how many ran, failed and were
    stopped) in each of `workers` spawned processes.

    Each gets the options (a dataclass) with its share of `trials`, its own sampler seed and,
    unless told otherwise, one training thread (the workers already share the cores). The
    parent draws the progress of all of them from the storage.

    Returns:
        Trials run, failed and stopped early, over all workers.

    Raises:
        KeyboardInterrupt: after every worker has recorded its running trial as failed.
        AutocompressError: a worker failed as a whole (not one trial: those are recorded).
    """
    from autocompress.errors import AutocompressError

    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    results = context.Queue()
    processes = []
    for index, share in enumerate(split_trials(trials, workers)):
        child = dataclasses.replace(
            options,
            trials=share,
            seed=(seed + SEED_STRIDE * (index + 1)) % 2**32,  # samplers take 32 bits
            train_threads=train_threads or 1,
        )
        process = context.Process(
            target=_worker_main,
            args=(target, child, index, results),
            name=f"autocompress-worker-{index}",
        )
        process.start()
        processes.append(process)
    outcomes: dict[int, tuple[int, int, int, str | None]] = {}
    try:
        with SearchProgress(total=trials, enabled=show_progress, notes=notes) as progress:
            _follow(study, processes, results, outcomes, progress)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): each records its running trial.
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        raise
    errors = [e for *_, e in outcomes.values() if e]
    errors += [
        f"worker {i} exited with code {p.exitcode}"
        for i, p in enumerate(processes)
        if i not in outcomes and p.exitcode
    ]
    if errors:
        raise AutocompressError(f"{len(errors)} of {len(processes)} workers failed: {errors[0]}")
    run, failed, stopped = (sum(o[i] for o in outcomes.values()) for i in range(3))
    return run, failed, stopped


def _follow(
    study: optuna.Study,
    processes: list[Any],
    results: Any,
    outcomes: dict[int, tuple[int, int, int, str | None]],
    progress: SearchProgress,
) -> None:
    """Until every worker ends: collect their results, show trials as the storage finishes them."""
    State = optuna.trial.TrialState
    finished = (State.COMPLETE, State.FAIL, State.PRUNED)
    shown = {t.number for t in study.get_trials(deepcopy=False, states=finished)}
    while True:
        try:
            index, run, failed, stopped, error = results.get(timeout=2.0)
            outcomes[index] = (run, failed, stopped, error)
        except queue.Empty:
            pass
        for trial in study.get_trials(deepcopy=False, states=finished):
            if trial.number in shown:
                continue
            shown.add(trial.number)
            if trial.state == State.FAIL:
                progress.trial_failed(f"#{trial.number} {trial.user_attrs.get('fail_reason')}")
            elif trial.state == State.PRUNED:
                progress.trial_stopped(trial.user_attrs)
            else:
                feasible = not violations(trial)
                progress.trial_done(trial.user_attrs, feasible=feasible)
        if all(not p.is_alive() for p in processes):
            while True:  # results put just before exiting
                try:
                    index, run, failed, stopped, error = results.get(timeout=0.5)
                    outcomes[index] = (run, failed, stopped, error)
                except queue.Empty:
                    break
            for process in processes:
                process.join()
            return
        time.sleep(0.1)
