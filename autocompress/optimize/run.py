"""The search behind `autocompress.search()`: prepare (or continue) a study, run its trials,
verify its front, and return it (`autocompress.api` adds the HTML report)."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.config import DEFAULT_FINETUNE_STEPS, DEFAULT_POLISH, DEFAULT_TARGET, Budget
from autocompress.errors import UserInputError
from autocompress.evaluate.sensitivity import DEFAULT_BATCHES as SENSITIVITY_BATCHES
from autocompress.evaluate.sensitivity import training_slice
from autocompress.hardware.targets import Target, resolve_target
from autocompress.latency.profiles import predictor_for
from autocompress.optimize import record
from autocompress.optimize.alternatives import measure_alternatives
from autocompress.optimize.early_stop import rung_steps
from autocompress.optimize.heartbeat import DEFAULT_HEARTBEAT_S
from autocompress.optimize.latency import batch_inputs
from autocompress.optimize.objectives import (
    Baseline,
    SearchContext,
    measure_baseline,
)
from autocompress.optimize.options import DEFAULT_MODEL, SearchOptions
from autocompress.optimize.pareto import Candidate, baseline_row, pareto_front
from autocompress.optimize.pareto import alternatives as alternatives_of
from autocompress.optimize.polish import Polisher
from autocompress.optimize.reach import reachability_notes
from autocompress.optimize.refine import floor_drop
from autocompress.optimize.seeding import refiner_for, seed_allocations
from autocompress.optimize.study import (
    check_identity,
    make_sampler,
    open_study,
    resolve_storage,
    storage_exists,
)
from autocompress.optimize.trial_loop import failure_reason, run_trials
from autocompress.optimize.verify import verify_front
from autocompress.optimize.workers import check_picklable, run_workers
from autocompress.resolve import check_task_fits, model_label, resolve_model, resolve_task
from autocompress.space.discover import discover
from autocompress.space.spec import SearchSpace, load_space, settings_for_methods
from autocompress.space.uniform import uniform_plans
from autocompress.task import Task


@dataclass(frozen=True)
class SearchResult:
    """What a search leaves: the study's front (all runs so far) and its dense baseline."""

    study: str
    storage: str
    front: list[Candidate]
    baseline: Candidate
    budget: Budget
    trials_run: int
    trials_failed: int
    trials_stopped: int = 0
    notes: list[str] = field(default_factory=list)
    # The study's HTML report, written by `autocompress.search` (`autocompress.api`), not here.
    report: Path | None = None
    alternatives: list[dict[str, Any]] = field(default_factory=list)


def _library_versions() -> dict[str, str]:
    import torch_pruning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "torch_pruning": torch_pruning.__version__,
    }


def _baseline(
    study: optuna.Study,
    dense: nn.Module,
    task: Task,
    target: Target,
    inputs: tuple[torch.Tensor, ...],
) -> Baseline:
    stored = record.read(study)
    if stored.baseline is not None and stored.fingerprint == target.fingerprint():
        return stored.baseline
    baseline = measure_baseline(dense, task, target, inputs)
    record.write_baseline(study, baseline, target.fingerprint())
    return baseline


def search(
    model: str | nn.Module = DEFAULT_MODEL,
    *,
    task: str | Task | None = None,
    target: str | Target = DEFAULT_TARGET,
    threads: int = 1,
    budget: Budget | None = None,
    space: str | SearchSpace | None = None,
    methods: Sequence[str] | None = None,
    trials: int = 30,
    timeout_s: float | None = None,
    sampler: str = "nsga2",
    finetune_steps: int = DEFAULT_FINETUNE_STEPS,
    seed: int = 0,
    study: str | None = None,
    storage: str | None = None,
    batch_size: int = 1,
    train_threads: int | None = None,
    latency: str = "predicted",
    show_progress: bool = True,
    workers: int = 1,
    heartbeat_s: int | None = DEFAULT_HEARTBEAT_S,
    alternatives: bool = True,
    early_stop: bool = False,
    warm_start: bool = True,
    allocate: bool = True,
    polish: int = DEFAULT_POLISH,
) -> SearchResult:
    """Search per-layer compression plans and return the Pareto front of accuracy, latency, size.

    Re-running with the same study name continues that study.

    Args:
        model: a zoo name, `pkg.mod:factory`, or an nn.Module.
        task: the task that judges it (zoo models bring their own).
        target: where latency is measured: a name (`autocompress targets`; default
            "cpu:onnxruntime", ONNX Runtime on this CPU) or a Target.
        threads: threads used when timing (recorded with every figure).
        budget: latency / size / accuracy-drop limits; None: half the dense latency.
        space: a search-space YAML path, a packaged name, or a SearchSpace; None: the
            target's own (`Target.space`: "runtime" on ONNX Runtime and OpenVINO, "default"
            in PyTorch eager).
        methods: search only these methods' knobs ("prune", "quant", "lowrank", "sparse");
            None for every knob the space has.
        trials: trials to run in this call.
        timeout_s: stop starting trials after this many seconds.
        sampler: "nsga2" (default), "tpe" or "random".
        finetune_steps: distillation steps per trial.
        seed: sampler seed.
        study: study name; default `<model>-<target>`.
        storage: Optuna storage URL; default `sqlite:///reports/autocompress.db`.
        batch_size: batch size latency is measured at.
        train_threads: threads for fine-tuning and evaluation; None chooses before each trial:
            all cores on a quiet machine, one while other processes are busy.
        latency: "predicted" scores trials with the target's latency predictor for this model
            and space (profiled first when not cached); "measured" builds and times every
            trial. Either way the front is built and measured after the trials (verify step).
        show_progress: draw a progress bar on stderr.
        workers: local processes filling the study together (`trials` is split between them);
            workers on other machines are more searches on the same study and storage.
        heartbeat_s: seconds between a running trial's heartbeats; a trial silent for twice
            as long (its worker was killed) is failed and queued again. None: no heartbeats.
        alternatives: measure the target's plain alternatives (the dense model in the
            target's runtime at fp32 and int8) beside the front; False skips them.
        early_stop: stop a trial's fine-tune at its rung (a quarter of its steps) when even
            its optimistic final accuracy is dominated by a completed feasible trial or below
            the `--max-drop` floor (`optimize.early_stop`); such trials are PRUNED in the study.
        warm_start: a new study first tries the space's uniform plans (each method alone at
            each level, then each keep ratio with int8; `space.uniform.uniform_plans`); False
            leaves every trial to the sampler.
        allocate: a new study with predicted latency also starts from per-layer plans
            allocated for 10 latency budgets from the model's measured sensitivity
            (`optimize.allocate`; measured on first use and cached), and once the queued
            plans are run, each trial refines the fastest plan that holds accuracy
            (`optimize.refine`; not with `warm_start=False`); False leaves both to the
            sampler.
        polish: the last this many trials of the call (at most a third of them) fine-tune the
            fastest plans that came near the accuracy floor (`--max-drop`, else 1 point) for 4x
            the steps (`optimize.polish`); a new study leaves them out of its queued warm
            starts. 0: none.

    Returns:
        The front over all the study's trials, the dense baseline row, and this run's counts;
        `autocompress.search` adds the path of the study's HTML report (None where it could
        not be written).
    """
    options = SearchOptions(
        model=model, task=task, target=target, threads=threads, budget=budget, space=space,
        methods=methods, trials=trials, timeout_s=timeout_s, sampler=sampler,
        finetune_steps=finetune_steps, seed=seed, study=study, storage=storage,
        batch_size=batch_size, train_threads=train_threads, latency=latency,
        show_progress=show_progress, workers=workers, heartbeat_s=heartbeat_s,
        alternatives=alternatives, early_stop=early_stop, warm_start=warm_start,
        allocate=allocate, polish=polish,
    )  # fmt: skip
    prepared = prepare(options)
    counts = run(prepared)
    verify_front(prepared.study, prepared.ctx, show_progress=options.show_progress)
    return result(prepared, counts)


@dataclass
class Prepared:
    """A study ready for its trials: the options, the open study, what trials are scored with
    (`SearchContext`, which holds the budget), and the notes to print."""

    options: SearchOptions
    name: str
    storage: Any
    study: optuna.Study
    ctx: SearchContext
    notes: list[str]


def prepare(options: SearchOptions, *, worker: bool = False) -> Prepared:
    """Check the options, load the model, open (or continue) the study, and make everything
    its trials need: the dense baseline, the latency predictor (profiled when not cached), the
    plain alternatives and the warm starts.

    Args:
        options: the search's options.
        worker: one of `--workers`' processes: the parent measured the alternatives, seeded
            the study and prints the notes, so this one does none of that.

    Returns:
        The prepared search.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar says what matters
    o = options
    o.check()
    # Bad space files and methods fail before a storage (a new database) is opened.
    hw = resolve_target(o.target, threads=o.threads)
    the_space = o.space if isinstance(o.space, SearchSpace) else load_space(o.space or hw.space)
    settings_for_methods(o.methods)
    study_name = o.study or f"{model_label(o.model)}-{hw.name}"
    identity = {
        "model": model_label(o.model),
        "target": hw.name,
        "threads": o.threads,
        "batch_size": o.batch_size,
    }
    # A study that exists is checked before any model is loaded; a new SQLite database is
    # created only once the model, task and space are known to be good.
    storage_obj = None
    if storage_exists(o.storage):
        storage_obj = resolve_storage(o.storage, heartbeat_s=o.heartbeat_s)
        check_identity(study_name, storage_obj, identity)
    resolved = resolve_model(o.model)
    the_task = resolve_task(o.task, resolved)
    check_task_fits(resolved.name, resolved.model, the_task)
    dense = resolved.model.eval()
    layers = discover(dense, the_task.inputs())
    knobs = the_space.knobs(layers, methods=o.methods, model=dense)
    hw.check_bits({c for k in knobs if k.setting == "weight_bits" for c in k.choices})
    if not knobs:
        raise UserInputError(
            f"search space {the_space.source} leaves nothing to search on {resolved.name}; "
            "give some layers more than one choice"
        )
    latency_inputs = batch_inputs(the_task, o.batch_size)

    identity["task"] = the_task.name
    if storage_obj is None:
        storage_obj = resolve_storage(o.storage, heartbeat_s=o.heartbeat_s)
    the_study = open_study(study_name, storage_obj, identity=identity)
    existing = len(the_study.trials)
    the_study.sampler = make_sampler(
        o.sampler, seed=(o.seed + existing) % 2**32, population_size=max(8, min(50, o.trials // 3))
    )
    baseline = _baseline(the_study, dense, the_task, hw, latency_inputs)
    notes = []
    budget = o.budget
    if budget is None:
        budget = Budget(latency_ms=round(baseline.latency_ms / 2, 3))
        notes.append(f"no budget given: using half the dense latency, {budget.latency_ms:g} ms")
    record.write_setup(
        the_study,
        budget=budget,
        space={"source": the_space.source, "knobs": len(knobs)},
        versions=_library_versions(),
        metric_name=the_task.metric_name,
        finetune_steps=o.finetune_steps,
    )
    ctx = SearchContext(
        dense=dense,
        task=the_task,
        target=hw,
        budget=budget,
        knobs=knobs,
        round_to=the_space.round_to,
        finetune_steps=o.finetune_steps,
        train_threads=o.train_threads,
        latency_inputs=latency_inputs,
        baseline=baseline,
        early_stop=o.early_stop,
        # the slice sensitivity measures on: a fine-tune is kept only if it does not score lower
        check_batches=training_slice(the_task, SENSITIVITY_BATCHES),
    )
    if o.early_stop and not worker:
        rungs = ", ".join(map(str, rung_steps(o.finetune_steps))) or "none (too few steps)"
        notes.append(
            f"early stopping: fine-tunes are scored at steps {rungs} of {o.finetune_steps} and "
            "stopped there when dominated beyond hope"
        )
    if o.latency == "predicted":  # profiled here once; worker processes find it in the cache
        ctx.predictor, path = predictor_for(
            dense,
            the_task,
            hw,
            model=model_label(o.model),
            layers=layers,
            knobs=knobs,
            round_to=the_space.round_to,
            inputs=latency_inputs,
            show_progress=o.show_progress,
        )
        notes.append(f"latency predicted from the profile {path}; the front is measured after")
    # a polish needs plans scored before it: at most a third of the call's trials polish
    polish = min(o.polish, o.trials // 3)
    if polish > 0 and o.finetune_steps > 0:
        ctx.polisher = Polisher(
            trials=polish,
            steps=o.finetune_steps,
            dense=baseline.accuracy,
            max_drop=floor_drop(budget),
        )
    if ctx.predictor is not None and o.allocate and o.warm_start:
        # with polishing, the descent goes on from plans the polish may bring back to the floor
        reach = floor_drop(budget) if ctx.polisher is None else ctx.polisher.reach
        ctx.refiner = refiner_for(ctx, model=model_label(o.model), max_drop=reach)
    prepared = Prepared(o, study_name, storage_obj, the_study, ctx, notes)
    if not worker:
        _seed(prepared, existing=existing)
        if ctx.refiner is not None:
            notes.append(ctx.refiner.note(ctx.task.metric_name))
        if ctx.polisher is not None:
            notes.append(ctx.polisher.note(ctx.task.metric_name))
    return prepared


def _seed(prepared: Prepared, *, existing: int) -> None:
    """What only the first process does: the reachability notes, the plain alternatives and,
    in a new study, the warm starts (uniform plans, then allocated ones)."""
    o, ctx, the_study, notes = prepared.options, prepared.ctx, prepared.study, prepared.notes
    notes += _reachability(ctx)
    if o.alternatives:
        measured = measure_alternatives(
            ctx.target, ctx.dense, ctx.task, ctx.latency_inputs, dense_ms=ctx.baseline.latency_ms
        )
        record.write_alternatives(the_study, measured)
        notes += [_alternative_note(a, ctx.baseline.latency_ms) for a in measured]
    if existing == 0 and o.warm_start:
        # the last trials are left to the polisher (`optimize.polish`), where it has any
        queued = o.trials - (ctx.polisher.trials if ctx.polisher is not None else 0)
        uniform = uniform_plans(ctx.knobs)[:queued]
        for params in uniform:
            # skip_if_exists: workers on several machines may start a new study at once
            the_study.enqueue_trial(
                params, user_attrs={"warm_start": "uniform"}, skip_if_exists=True
            )
        room = queued - len(uniform)  # no plan is left queued for a later run
        if o.allocate and ctx.predictor is not None and room > 0:
            label = model_label(o.model)
            notes.append(seed_allocations(the_study, ctx, label, o.show_progress, room))


def run(prepared: Prepared, *, worker: bool = False) -> tuple[int, int, int]:
    """Run this call's trials: here, or in `--workers` processes that share the study.

    Args:
        prepared: from `prepare`.
        worker: this is one of those processes (no progress notes of its own).

    Returns:
        Trials run, failed and stopped early.
    """
    o = prepared.options
    if o.workers > 1 and not worker:
        check_picklable(model=o.model, task=o.task, space=o.space)
        child = replace(o, study=prepared.name, budget=prepared.ctx.budget, show_progress=False)
        return run_workers(
            work, child, study=prepared.study, workers=o.workers, trials=o.trials,
            seed=o.seed, train_threads=o.train_threads, show_progress=o.show_progress,
            notes=prepared.notes,
        )  # fmt: skip
    notes = [] if worker else prepared.notes
    return run_trials(
        prepared.study, prepared.storage, prepared.ctx, o.trials, o.timeout_s, o.show_progress,
        notes,
    )  # fmt: skip


def work(options: SearchOptions) -> tuple[int, int, int]:
    """One of `--workers`' processes: prepare quietly, then run its share of the trials."""
    return run(prepare(options, worker=True), worker=True)


def result(prepared: Prepared, counts: tuple[int, int, int]) -> SearchResult:
    """The study's front over all its trials (after the verify step), and this run's counts."""
    final = record.read(prepared.study)
    run_, failed, stopped = counts
    return SearchResult(
        study=prepared.name,
        storage=prepared.options.storage or "sqlite:///reports/autocompress.db",
        front=pareto_front(prepared.study, final),
        baseline=baseline_row(prepared.study, final) or {},
        budget=prepared.ctx.budget,
        trials_run=run_,
        trials_failed=failed,
        trials_stopped=stopped,
        notes=prepared.notes,
        alternatives=alternatives_of(prepared.study, final),
    )


def _alternative_note(alternative: dict[str, Any], dense_ms: float) -> str:
    label = alternative["label"]
    if "error" in alternative:
        return f"plain alternative {label}: not measured ({alternative['error']})"
    speed = dense_ms / alternative["latency_ms"]
    if round(speed, 2) == 1 or round(1 / speed, 2) == 1:
        relation = "as fast as"
    elif speed > 1:
        relation = f"{speed:.2f}x faster than"
    else:
        relation = f"{1 / speed:.2f}x slower than"
    return (
        f"plain alternative {label}: {alternative['latency_ms']:.3f} ms ({relation} the dense "
        f"model), accuracy {alternative['accuracy']:.4f}"
    )


def _reachability(ctx: SearchContext) -> list[str]:
    try:
        return reachability_notes(ctx)
    except Exception as exc:  # the same failure will be recorded for each trial that meets it
        return [f"cannot tell whether the budget is reachable: {failure_reason(exc)}"]
