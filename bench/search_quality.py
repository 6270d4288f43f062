"""Search quality: the joint search against each method alone, random sampling and uniform plans.

What it measures. On each model (default: digits-resnet, the demo CNN, and mnist1d-cnn) and
each configuration, at equal trial budgets (`--trials`) and sampler seeds (`--seeds`), searches
run through `autocompress.optimize.run.search` on `--target` (default: cpu, PyTorch eager, as
the tables so far were measured; each target searches its own space) with predicted latency:

- joint: the default space, every method, NSGA-II, the uniform warm starts and the plans
  allocated from the model's sensitivity (what `autocompress search` does);
- joint-noalloc: the same without the allocated plans (`allocate=False`);
- joint-es: the same with early stopping (`--early-stop`); stopped trials count in the budget;
- prune, quant, lowrank: the default space restricted to one method (`methods=[...]`), NSGA-II;
- random: every method, random sampler, after the same uniform warm starts as joint (no
  allocated plans);
- random-cold: every method, the random sampler alone (`warm_start=False`): what random
  search gives without this tool's warm starts; the bar of issue #9 is against it;
- uniform: every layer at one setting (`space.uniform.uniform_sweep`: each keep ratio, int8,
  int4 weights, each rank ratio, each sparsity and pattern, each keep ratio with int8), each
  scored once; seed-independent.

`search()` enqueues its space's uniform warm starts into every new study, so every search
configuration begins with the uniform plans of its own space (the random and single-method
runs included); the budget counts them.

Per (model, config), from the COMPLETE trials of each study:
- hypervolume over (accuracy, latency, size) with the reference point (dense latency, dense
  size, dense accuracy - `--floor-drop`), normalised so the box from there to (zero latency,
  zero size, dense accuracy) is 1 (`report.data.hypervolume_gain`); mean and std over seeds;
- best accuracy with predicted latency at most 0.75x, 0.5x and 0.35x of dense;
- the front above the accuracy floor, split into warm starts and plans the sampler drew;
- trial time: the sum of the durations of the study's complete and stopped trials
  (fine-tunes, scoring; not the study's set-up, not failed trials), and for joint-es the
  time saved and the hypervolume lost against joint, seed by seed.
Latency is predicted everywhere, by one predictor per model (the cached profile of the full
default space), also for the single-method runs, whose searches used their own space's
profile: every configuration is judged by the same predictor. The fronts are not measured
after each search (each study is `prepare`d and `run` without the verify step, the plain
alternatives or the HTML report), to save time; `bench/predictor.py` reports how well
predictions match.
Accuracy: the task's metric on the validation split after the fine-tune. Size: exact bytes.

Usage: python bench/search_quality.py [--models NAME ...] [--configs joint,joint-es,...]
       [--trials 40] [--seeds 0 1 2] [--jobs 2] [--storage URL] [--floor-drop 0.10]
       [--finetune-steps 60] [--out reports/benchmarks/search_quality.md] [--report-only]
Each (model, config, seed) is its own study in one SQLite file (--storage, default
<autocompress cache>/bench/search_quality.db). Re-running resumes: it runs only the trials a
study still lacks (complete + stopped early) and recomputes every table from all studies.
Writes --out and a plot next to it (same name, .html) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from search_quality_tables import LATENCY_BUDGETS, StudyFigures, plot, report

MODELS = ("digits-resnet", "mnist1d-cnn")
CONFIGS: dict[str, dict[str, Any]] = {
    "joint": {},
    "joint-noalloc": {"allocate": False},
    "joint-es": {"early_stop": True},
    "prune": {"methods": ["prune"]},
    "quant": {"methods": ["quant"]},
    "lowrank": {"methods": ["lowrank"]},
    "random": {"sampler": "random", "allocate": False},
    "random-cold": {"sampler": "random", "warm_start": False},
    "uniform": {},
}
REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmarks" / "search_quality.md"
PREFIX = "search-quality"


def study_name(model: str, config: str, seed: int | None, target: str = "cpu") -> str:
    """One study per (target, model, config, seed); the uniform sweep has no seed. Studies on
    the eager CPU target keep the names they had before targets were a choice here."""
    prefix = PREFIX if target == "cpu" else f"{PREFIX}@{target}"
    if config == "uniform":
        return f"{prefix}/{model}/uniform"
    return f"{prefix}/{model}/{config}/seed{seed}"


def default_storage() -> str:
    from autocompress.cache import cache_dir

    return f"sqlite:///{cache_dir() / 'bench' / 'search_quality.db'}"


@dataclass(frozen=True)
class Job:
    """One study to fill: its model, configuration, seed and how many trials it still lacks."""

    model: str
    config: str
    seed: int | None
    trials: int
    storage: str
    finetune_steps: int
    floor_drop: float
    target: str


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)


def _load_study(name: str, storage: str) -> optuna.Study | None:
    from autocompress.optimize.study import resolve_storage

    try:
        return optuna.load_study(study_name=name, storage=resolve_storage(storage))
    except KeyError:
        return None


def _done(study: optuna.Study | None) -> int:
    """Trials that count against the budget: complete and stopped early."""
    if study is None:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _knobs(model: str, methods: Sequence[str] | None = None, target: str = "cpu"):
    """The model's dense copy, task, layers and the target's space's knobs (for `methods`)."""
    from autocompress.hardware.targets import default_space
    from autocompress.space.discover import discover
    from autocompress.space.spec import load_space
    from autocompress.zoo import load_model, load_task

    task = load_task(model)
    dense = load_model(model, task=task).eval()
    space = load_space(default_space(target))
    layers = discover(dense, task.inputs())
    return dense, task, layers, space, space.knobs(layers, methods=methods, model=dense)


def predictor(model: str, methods: Sequence[str] | None = None, target: str = "cpu"):
    """The model's latency predictor on `target` for its space (restricted to `methods`): the
    cached profile, profiled now when missing (as search() would)."""
    from autocompress.hardware.targets import resolve_target
    from autocompress.latency.profiles import predictor_for
    from autocompress.optimize.latency import batch_inputs

    dense, task, layers, space, knobs = _knobs(model, methods, target)
    found, _ = predictor_for(
        dense, task, resolve_target(target, threads=1), model=model, layers=layers, knobs=knobs,
        round_to=space.round_to, inputs=batch_inputs(task, 1), show_progress=True,
    )  # fmt: skip
    return found


def _queue_uniform(job: Job) -> int:
    """Enqueue the uniform sweep into a new uniform study; the trials still queued."""
    from autocompress.optimize.study import DIRECTIONS, resolve_storage
    from autocompress.space.uniform import uniform_sweep

    name = study_name(job.model, "uniform", None, job.target)
    # search() stores the study's identity on first use; here only its directions matter.
    study = optuna.create_study(
        study_name=name,
        storage=resolve_storage(job.storage),
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if not study.trials:  # search() adds no warm starts to a study that has trials queued
        for label, params in uniform_sweep(_knobs(job.model, target=job.target)[4]):
            study.enqueue_trial(params, user_attrs={"uniform_level": label})
    waiting = optuna.trial.TrialState.WAITING
    return len(study.get_trials(deepcopy=False, states=(waiting,)))


def run_job(job: Job) -> tuple[Job, float, str | None]:
    """Fill one study (in a worker process); returns the job, its wall seconds and any error."""
    from autocompress.config import Budget
    from autocompress.optimize.options import SearchOptions
    from autocompress.optimize.run import prepare, run

    _quiet()
    started = time.monotonic()
    try:
        trials = job.trials
        options = dict(CONFIGS[job.config])
        if job.config == "uniform":
            trials = _queue_uniform(job)
            options = {"sampler": "random"}  # the queued levels come first, nothing else runs
        if trials > 0:
            # prepare -> run without the verify step (nor the plain alternatives, nor the
            # HTML report): the bench compares predicted figures only.
            prepared = prepare(SearchOptions(
                model=job.model, study=study_name(job.model, job.config, job.seed, job.target),
                target=job.target,
                storage=job.storage, trials=trials, seed=job.seed or 0,
                budget=Budget(max_drop=job.floor_drop), finetune_steps=job.finetune_steps,
                train_threads=1, latency="predicted", show_progress=False, alternatives=False,
                **options,
            ))  # fmt: skip
            run(prepared)
    except Exception as exc:  # one failed study must not lose the others' hours
        return job, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
    wall = time.monotonic() - started
    study = _load_study(study_name(job.model, job.config, job.seed, job.target), job.storage)
    if study is not None:
        study.set_user_attr("bench_wall_s", study.user_attrs.get("bench_wall_s", 0.0) + wall)
    return job, wall, None


# ---------------------------------------------------------------- metrics


def study_figures(
    study: optuna.Study, seed: int | None, predict: Any, *, floor_drop: float
) -> StudyFigures:
    """Hypervolume, best accuracy under each latency budget and time, from one study."""
    from autocompress.optimize.pareto import non_dominated
    from autocompress.report.data import hypervolume, hypervolume_gain

    figures = StudyFigures(study.study_name, seed, wall_s=study.user_attrs.get("bench_wall_s", 0))
    baseline = study.user_attrs.get("baseline")
    origin: list[str] = []  # per point: "uniform" (or a uniform level), "allocated", "sampled"
    State = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False):
        # A failed trial's span is not work: a worker killed mid-trial (an interrupted bench)
        # leaves it running until a resumed search fails it, hours later; its retry counts.
        finished = t.state in (State.COMPLETE, State.PRUNED)
        if finished and t.datetime_start is not None and t.datetime_complete is not None:
            figures.trial_s += (t.datetime_complete - t.datetime_start).total_seconds()
        figures.complete += t.state == State.COMPLETE
        figures.stopped += t.state == State.PRUNED
        figures.failed += t.state == State.FAIL
        if t.state == State.COMPLETE and baseline is not None:
            attrs = t.user_attrs
            ratio = predict(attrs["plan"])
            size_ratio = attrs["size_bytes"] / baseline["size_bytes"]
            figures.points.append((attrs["accuracy"], ratio, size_ratio))
            figures.labels.append(attrs.get("uniform_level", f"trial {t.number}"))
            level = "uniform" if "uniform_level" in attrs else "sampled"
            origin.append(attrs.get("warm_start", level))
    if baseline is None:
        return figures
    dense = float(baseline["accuracy"])
    gains = [
        hypervolume_gain(a, r, s, dense_accuracy=dense, floor=dense - floor_drop)
        for a, r, s in figures.points
    ]
    figures.hypervolume = hypervolume(gains)
    above = [i for i, (a, _, _) in enumerate(figures.points) if a >= dense - floor_drop]
    for i in non_dominated([figures.points[i] for i in above]):
        kind = origin[above[i]]
        if kind == "allocated":
            figures.front_allocated += 1
        elif kind == "sampled":
            figures.front_sampled += 1
        else:
            figures.front_warm += 1
    for budget in LATENCY_BUDGETS:
        fits = [a for a, r, _ in figures.points if r <= budget]
        figures.best[budget] = max(fits) if fits else None
    return figures


def _cached_predict(found: Any) -> Any:
    """plan dict -> predicted latency ratio, each distinct plan predicted once."""
    from autocompress.config import Plan

    cache: dict[str, float] = {}

    def predict(plan: dict[str, Any]) -> float:
        key = json.dumps(plan, sort_keys=True)
        if key not in cache:
            cache[key] = found.predict_ratio(Plan.from_dict(plan))
        return cache[key]

    return predict


def collect(
    models: Sequence[str], configs: Sequence[str], seeds: Sequence[int], args: argparse.Namespace
) -> dict[str, dict[str, list[StudyFigures]]]:
    """Figures of every study the storage holds for these models, configs and seeds."""
    results: dict[str, dict[str, list[StudyFigures]]] = {}
    for model in models:
        predict = _cached_predict(predictor(model, target=args.target))

        results[model] = {}
        for config in configs:
            rows = []
            for seed in [None] if config == "uniform" else seeds:
                name = study_name(model, config, seed, args.target)
                study = _load_study(name, args.storage)
                if study is not None:
                    rows.append(study_figures(study, seed, predict, floor_drop=args.floor_drop))
            results[model][config] = rows
    return results


# ---------------------------------------------------------------- main


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for model in args.models:
        for seed in args.seeds:
            for config in args.configs:
                if config == "uniform" and seed != args.seeds[0]:
                    continue
                the_seed = None if config == "uniform" else seed
                name = study_name(model, config, the_seed, args.target)
                study = _load_study(name, args.storage)
                missing = args.trials - _done(study)
                if config == "uniform":
                    missing = 1  # run_job queues the sweep and runs what is still queued
                if missing > 0:
                    jobs.append(
                        Job(model, config, the_seed, missing, args.storage, args.finetune_steps,
                            args.floor_drop, args.target)
                    )  # fmt: skip
    return jobs


def prepare(args: argparse.Namespace) -> None:
    """Profile (or load) every predictor the jobs need, one at a time, before jobs run at once:
    two studies profiling the same model at once would time each other."""
    for model in args.models:
        for methods in {tuple(CONFIGS[c].get("methods") or ()) for c in args.configs}:
            predictor(model, list(methods) or None, args.target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--target", default="cpu", help="target every search times on (default: cpu, eager)"
    )
    parser.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=list(CONFIGS),
        help=f"comma list of {','.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--trials", type=int, default=40, help="trials per study (default 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once (processes)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: cache)")
    parser.add_argument(
        "--floor-drop",
        type=float,
        default=0.10,
        help="accuracy floor of the hypervolume, below dense (default 0.10 = 10 points); "
        "also each study's --max-drop",
    )
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; recompute the tables"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {','.join(CONFIGS)}")
    args.storage = args.storage or default_storage()
    _quiet()
    command = "python bench/search_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)

    if not args.report_only:
        prepare(args)
        jobs = plan_jobs(args)
        print(f"{len(jobs)} studies to fill, {args.jobs} at a time", flush=True)
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        errors = 0
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            for future in as_completed(futures):
                job, wall, error = future.result()
                name = study_name(job.model, job.config, job.seed, job.target)
                if error:
                    errors += 1
                    print(f"  {name}: FAILED after {wall / 60:.1f} min: {error}", flush=True)
                else:
                    print(f"  {name}: done in {wall / 60:.1f} min", flush=True)
        if errors:
            print(f"{errors} studies failed; re-run to retry them", flush=True)

    results = collect(args.models, args.configs, args.seeds, args)
    html = args.out.with_suffix(".html")
    text = report(results, args, command.strip(), html.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    plot(results, html)
    print(text)
    print(f"wrote {args.out} and {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
