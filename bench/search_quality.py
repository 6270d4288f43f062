"""Search quality: the joint search against each method alone, random sampling and uniform plans.

What it measures. On each model (default: digits-resnet, the demo CNN, and mnist1d-cnn) and
each configuration, at equal trial budgets (`--trials`) and sampler seeds (`--seeds`), searches
run through `autocompress.optimize.run.search` on the CPU target with predicted latency:

- joint: the default space, every method, NSGA-II (what `autocompress search` does);
- joint-es: the same with early stopping (`--early-stop`); stopped trials count in the budget;
- prune, quant, lowrank: the default space restricted to one method (`methods=[...]`), NSGA-II;
- random: every method, random sampler, after the same uniform warm starts as joint;
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
- trial time: the sum of the study's trial durations (fine-tunes, scoring; not the study's
  set-up), and for joint-es the time saved and the hypervolume lost against joint, seed by seed.
Latency is predicted everywhere, by one predictor per model (the cached profile of the full
default space), also for the single-method runs, whose searches used their own space's
profile: every configuration is judged by the same predictor. The fronts are not measured
after each search (search() runs as a worker here: no verify step, no plain alternatives, no
HTML report), to save time; `bench/predictor.py` reports how well predictions match.
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
import datetime
import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

MODELS = ("digits-resnet", "mnist1d-cnn")
CONFIGS: dict[str, dict[str, Any]] = {
    "joint": {},
    "joint-es": {"early_stop": True},
    "prune": {"methods": ["prune"]},
    "quant": {"methods": ["quant"]},
    "lowrank": {"methods": ["lowrank"]},
    "random": {"sampler": "random"},
    "random-cold": {"sampler": "random", "warm_start": False},
    "uniform": {},
}
SINGLE = ("prune", "quant", "lowrank")
LATENCY_BUDGETS = (0.75, 0.5, 0.35)  # of the dense model's predicted latency
# Acceptance bars of issue #9 (on digits-resnet).
BAR_SINGLE, BAR_RANDOM, BAR_ES_SAVED, BAR_ES_LOST = 1.1, 1.2, 0.30, 0.03
REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmarks" / "search_quality.md"
PREFIX = "search-quality"


def study_name(model: str, config: str, seed: int | None) -> str:
    """One study per (model, config, seed); the uniform sweep has no seed."""
    if config == "uniform":
        return f"{PREFIX}/{model}/uniform"
    return f"{PREFIX}/{model}/{config}/seed{seed}"


def default_storage() -> str:
    from autocompress.zoo._cache import cache_dir

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


def _knobs(model: str, methods: Sequence[str] | None = None):
    """The model's dense copy, task, layers and the default space's knobs (for `methods`)."""
    from autocompress.space.discover import discover
    from autocompress.space.spec import load_space
    from autocompress.zoo import load_model, load_task

    task = load_task(model)
    dense = load_model(model, task=task).eval()
    space = load_space("default")
    layers = discover(dense, task.inputs())
    return dense, task, layers, space, space.knobs(layers, methods=methods)


def predictor(model: str, methods: Sequence[str] | None = None):
    """The model's latency predictor for the default space (restricted to `methods`): the
    cached profile, profiled now when missing (as search() would)."""
    from autocompress.hardware.profiles import predictor_for
    from autocompress.hardware.targets import resolve_target
    from autocompress.optimize.latency import batch_inputs

    dense, task, layers, space, knobs = _knobs(model, methods)
    found, _ = predictor_for(
        dense, task, resolve_target("cpu", threads=1), model=model, layers=layers, knobs=knobs,
        round_to=space.round_to, inputs=batch_inputs(task, 1), show_progress=True,
    )  # fmt: skip
    return found


def _queue_uniform(job: Job) -> int:
    """Enqueue the uniform sweep into a new uniform study; the trials still queued."""
    from autocompress.optimize.study import DIRECTIONS, resolve_storage
    from autocompress.space.uniform import uniform_sweep

    name = study_name(job.model, "uniform", None)
    # search() stores the study's identity on first use; here only its directions matter.
    study = optuna.create_study(
        study_name=name,
        storage=resolve_storage(job.storage),
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if not study.trials:  # search() adds no warm starts to a study that has trials queued
        for label, params in uniform_sweep(_knobs(job.model)[4]):
            study.enqueue_trial(params, user_attrs={"uniform_level": label})
    waiting = optuna.trial.TrialState.WAITING
    return len(study.get_trials(deepcopy=False, states=(waiting,)))


def run_job(job: Job) -> tuple[Job, float, str | None]:
    """Fill one study (in a worker process); returns the job, its wall seconds and any error."""
    from autocompress.config import Budget
    from autocompress.optimize.run import search

    _quiet()
    started = time.monotonic()
    try:
        trials = job.trials
        options = dict(CONFIGS[job.config])
        if job.config == "uniform":
            trials = _queue_uniform(job)
            options = {"sampler": "random"}  # the queued levels come first, nothing else runs
        if trials > 0:
            # worker=True: search() leaves out what a parent process does (plain alternatives,
            # the verify step, the HTML report); the bench compares predicted figures only.
            search(
                job.model, study=study_name(job.model, job.config, job.seed),
                storage=job.storage, trials=trials, seed=job.seed or 0,
                budget=Budget(max_drop=job.floor_drop), finetune_steps=job.finetune_steps,
                train_threads=1, latency="predicted", show_progress=False, worker=True,
                **options,
            )  # fmt: skip
    except Exception as exc:  # one failed study must not lose the others' hours
        return job, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
    wall = time.monotonic() - started
    study = _load_study(study_name(job.model, job.config, job.seed), job.storage)
    if study is not None:
        study.set_user_attr("bench_wall_s", study.user_attrs.get("bench_wall_s", 0.0) + wall)
    return job, wall, None


# ---------------------------------------------------------------- metrics


@dataclass
class StudyFigures:
    """One study's figures (latency re-predicted by the model's full-space predictor)."""

    name: str
    seed: int | None
    complete: int = 0
    stopped: int = 0
    failed: int = 0
    trial_s: float = 0.0
    wall_s: float = 0.0
    hypervolume: float = 0.0
    best: dict[float, float | None] = field(default_factory=dict)
    points: list[tuple[float, float, float]] = field(default_factory=list)  # acc, lat, size ratio
    labels: list[str] = field(default_factory=list)


def study_figures(
    study: optuna.Study, seed: int | None, predict: Any, *, floor_drop: float
) -> StudyFigures:
    """Hypervolume, best accuracy under each latency budget and time, from one study."""
    from autocompress.report.data import hypervolume, hypervolume_gain

    figures = StudyFigures(study.study_name, seed, wall_s=study.user_attrs.get("bench_wall_s", 0))
    baseline = study.user_attrs.get("baseline")
    State = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False):
        if t.datetime_start is not None and t.datetime_complete is not None:
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
    if baseline is None:
        return figures
    dense = float(baseline["accuracy"])
    gains = [
        hypervolume_gain(a, r, s, dense_accuracy=dense, floor=dense - floor_drop)
        for a, r, s in figures.points
    ]
    figures.hypervolume = hypervolume(gains)
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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(
    models: Sequence[str], configs: Sequence[str], seeds: Sequence[int], args: argparse.Namespace
) -> dict[str, dict[str, list[StudyFigures]]]:
    """Figures of every study the storage holds for these models, configs and seeds."""
    results: dict[str, dict[str, list[StudyFigures]]] = {}
    for model in models:
        predict = _cached_predict(predictor(model))

        results[model] = {}
        for config in configs:
            rows = []
            for seed in [None] if config == "uniform" else seeds:
                study = _load_study(study_name(model, config, seed), args.storage)
                if study is not None:
                    rows.append(study_figures(study, seed, predict, floor_drop=args.floor_drop))
            results[model][config] = rows
    return results


# ---------------------------------------------------------------- tables


def _f(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _hv(rows: list[StudyFigures]) -> tuple[float, float]:
    return _mean_std([r.hypervolume for r in rows])


def model_table(config_rows: dict[str, list[StudyFigures]], trials: int, seeds: int) -> str:
    budgets = " | ".join(f"best acc ≤{b:g}x" for b in LATENCY_BUDGETS)
    lines = [
        f"| config | studies | trials: complete / stopped / failed | hypervolume (mean ± std) "
        f"| {budgets} | trial time min (mean) | search wall min (mean) |",
        "|---|---:|---:|---:|" + "---:|" * len(LATENCY_BUDGETS) + "---:|---:|",
    ]
    for config, rows in config_rows.items():
        if not rows:
            lines.append(f"| {config} | 0 | not run yet | | " + "| " * len(LATENCY_BUDGETS) + "| |")
            continue
        mean, std = _hv(rows)
        asked = 1 if config == "uniform" else seeds
        partial = [r for r in rows if config != "uniform" and r.complete + r.stopped < trials]
        note = f" ({len(partial)} partial)" if partial else ""
        best = " | ".join(_f(_mean_or_none([r.best.get(b) for r in rows])) for b in LATENCY_BUDGETS)
        lines.append(
            f"| {config} | {len(rows)}/{asked}{note} | "
            f"{sum(r.complete for r in rows)} / {sum(r.stopped for r in rows)} / "
            f"{sum(r.failed for r in rows)} | {mean:.4f} ± {std:.4f} | {best} | "
            f"{statistics.fmean(r.trial_s for r in rows) / 60:.2f} | "
            f"{statistics.fmean(r.wall_s for r in rows) / 60:.2f} |"
        )
    return "\n".join(lines)


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def ratios(config_rows: dict[str, list[StudyFigures]], model: str) -> list[str]:
    """Joint against the best single method and against random sampling, with the bars."""
    out = []
    joint = _hv(config_rows.get("joint", []))[0]
    singles = {c: _hv(config_rows[c])[0] for c in SINGLE if config_rows.get(c)}
    singles = {c: v for c, v in singles.items() if not math.isnan(v)}
    bar_note = model == "digits-resnet"
    if singles and not math.isnan(joint):
        best = max(singles, key=lambda c: singles[c])
        value = joint / singles[best] if singles[best] > 0 else math.inf
        verdict = f" (bar ≥{BAR_SINGLE}x: {'met' if value >= BAR_SINGLE else 'not met'})"
        out.append(
            f"- joint / best single method ({best}, {singles[best]:.4f}): **{value:.2f}x**"
            + (verdict if bar_note else "")
        )
    for config, bar in (("random-cold", True), ("random", False)):
        rows = config_rows.get(config, [])
        if rows and not math.isnan(joint):
            rand = _hv(rows)[0]
            value = joint / rand if rand > 0 else math.inf
            verdict = f" (bar ≥{BAR_RANDOM}x: {'met' if value >= BAR_RANDOM else 'not met'})"
            label = "random sampler" if bar else "random sampler after the same warm starts"
            out.append(
                f"- joint / {label} ({config}): **{value:.2f}x**"
                + (verdict if bar_note and bar else "")
            )
    if config_rows.get("uniform") and not math.isnan(joint):
        uni = _hv(config_rows["uniform"])[0]
        out.append(f"- joint / uniform sweep: {joint / uni if uni > 0 else math.inf:.2f}x")
    return out


def early_stop_table(config_rows: dict[str, list[StudyFigures]]) -> str:
    """Seed by seed: trial time and hypervolume of joint and joint-es."""
    joint = {r.seed: r for r in config_rows.get("joint", [])}
    es = {r.seed: r for r in config_rows.get("joint-es", [])}
    seeds = sorted(set(joint) & set(es), key=lambda s: -1 if s is None else s)
    if not seeds:
        return "No seed has both joint and joint-es yet."
    lines = [
        "| seed | joint trial min | joint-es trial min | stopped | time saved "
        "| joint HV | joint-es HV | HV lost |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    saved, lost = [], []
    for s in seeds:
        j, e = joint[s], es[s]
        saved.append(1 - e.trial_s / j.trial_s if j.trial_s else math.nan)
        lost.append(1 - e.hypervolume / j.hypervolume if j.hypervolume else math.nan)
        lines.append(
            f"| {s} | {j.trial_s / 60:.2f} | {e.trial_s / 60:.2f} | {e.stopped} | "
            f"{saved[-1]:.1%} | {j.hypervolume:.4f} | {e.hypervolume:.4f} | {lost[-1]:+.1%} |"
        )
    ms, ml = statistics.fmean(saved), statistics.fmean(lost)
    lines.append(f"| mean | | | | **{ms:.1%}** | | | **{ml:+.1%}** |")
    lines += [
        "",
        f"Bars: time saved ≥{BAR_ES_SAVED:.0%} ({'met' if ms >= BAR_ES_SAVED else 'not met'}), "
        f"hypervolume lost ≤{BAR_ES_LOST:.0%} ({'met' if ml <= BAR_ES_LOST else 'not met'}). "
        "Both runs of a seed start alike but diverge after the first stop (the sampler sees "
        "other trials), so the difference includes search noise, not only what the stops cost.",
    ]
    return "\n".join(lines)


def uniform_table(rows: list[StudyFigures]) -> str:
    if not rows:
        return "Not run yet."
    r = rows[0]
    lines = [
        "| level | accuracy | latency ×dense (predicted) | size ×dense |",
        "|---|---:|---:|---:|",
    ]
    for label, (a, lat, size) in zip(r.labels, r.points, strict=True):
        lines.append(f"| {label} | {a:.4f} | {lat:.3f} | {size:.3f} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(results, args: argparse.Namespace, command: str, html_name: str) -> str:
    header = [
        "# Search quality: joint search vs one method, random sampling, uniform plans",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC (tables recomputed "
        "from every study in the storage; studies may come from several sessions)",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"optuna {optuna.__version__}, Python {platform.python_version()}",
        f"- trials per study: {args.trials}; seeds: {' '.join(map(str, args.seeds))}; "
        f"fine-tune: {args.finetune_steps} distillation steps, 1 training thread; "
        f"{args.jobs} studies at a time",
        f"- hypervolume reference: dense latency, dense size, dense accuracy - "
        f"{args.floor_drop:g} (also each study's --max-drop, so trials below it are infeasible)",
        "- **predicted**: every latency figure (ratio to dense, one full-space predictor per "
        "model); the fronts were not measured after the searches. Accuracy (validation split, "
        "after the fine-tune) and size (exact bytes) are measured.",
        f"- plot: [{html_name}]({html_name})",
        "",
        "Every search study starts with the uniform warm starts of its own space (search() "
        "enqueues them), the single-method and random runs too. Trial time: the sum of a "
        "study's trial durations (what early stopping saves); search wall: the time of the "
        "search() calls that filled it (set-up included: loading, the dense baseline). With "
        "two studies at a time they share the machine's cores.",
    ]
    parts = ["\n".join(header)]
    for model, config_rows in results.items():
        section = [f"## {model}", "", model_table(config_rows, args.trials, len(args.seeds))]
        lines = ratios(config_rows, model)
        if lines:
            section += ["", *lines]
        if "joint-es" in config_rows:
            section += ["", "### Early stopping vs joint", "", early_stop_table(config_rows)]
        if "uniform" in config_rows:
            section += ["", "### Uniform sweep", "", uniform_table(config_rows["uniform"])]
        parts.append("\n".join(section))
    return "\n\n".join(parts) + "\n"


def plot(results, path: Path) -> None:
    """Hypervolume per config (mean ± std) and each config's accuracy-vs-latency staircase."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bars = go.Figure()
    for model, config_rows in results.items():
        configs = [c for c, rows in config_rows.items() if rows]
        stats = [_hv(config_rows[c]) for c in configs]
        bars.add_trace(
            go.Bar(
                name=model,
                x=configs,
                y=[m for m, _ in stats],
                error_y={"type": "data", "array": [s for _, s in stats]},
            )
        )
    bars.update_layout(
        template="plotly_white", barmode="group", yaxis_title="hypervolume (dense box = 1)",
        title="Hypervolume per configuration, mean ± std over seeds",
    )  # fmt: skip
    fronts = make_subplots(rows=1, cols=max(1, len(results)), subplot_titles=list(results))
    for col, (model, config_rows) in enumerate(results.items(), start=1):
        for config, rows in config_rows.items():
            points = sorted((lat, a) for r in rows for a, lat, _ in r.points)
            stair, best = [], -math.inf
            for lat, a in points:  # best accuracy at or below each latency, over all seeds
                if a > best:
                    best = a
                    stair.append((lat, a))
            if stair:
                fronts.add_trace(
                    go.Scatter(
                        x=[p[0] for p in stair],
                        y=[p[1] for p in stair],
                        mode="lines+markers",
                        line_shape="hv",
                        name=f"{model} {config}",
                        legendgroup=config,
                    ),
                    row=1,
                    col=col,
                )
        fronts.update_xaxes(title_text="latency ×dense (predicted)", row=1, col=col)
        fronts.update_yaxes(title_text="accuracy", row=1, col=col)
    fronts.update_layout(
        template="plotly_white",
        title="Best accuracy at each latency, all seeds pooled (size not shown)",
    )
    html = (
        "<html><head><meta charset='utf-8'><title>search quality</title></head><body>"
        + bars.to_html(full_html=False, include_plotlyjs="inline")
        + fronts.to_html(full_html=False, include_plotlyjs=False)
        + "</body></html>"
    )
    path.write_text(html)


# ---------------------------------------------------------------- main


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for model in args.models:
        for seed in args.seeds:
            for config in args.configs:
                if config == "uniform" and seed != args.seeds[0]:
                    continue
                the_seed = None if config == "uniform" else seed
                study = _load_study(study_name(model, config, the_seed), args.storage)
                missing = args.trials - _done(study)
                if config == "uniform":
                    missing = 1  # run_job queues the sweep and runs what is still queued
                if missing > 0:
                    jobs.append(
                        Job(model, config, the_seed, missing, args.storage, args.finetune_steps,
                            args.floor_drop)
                    )  # fmt: skip
    return jobs


def prepare(args: argparse.Namespace) -> None:
    """Profile (or load) every predictor the jobs need, one at a time, before jobs run at once:
    two studies profiling the same model at once would time each other."""
    for model in args.models:
        for methods in {tuple(CONFIGS[c].get("methods") or ()) for c in args.configs}:
            predictor(model, list(methods) or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
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
                name = study_name(job.model, job.config, job.seed)
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
