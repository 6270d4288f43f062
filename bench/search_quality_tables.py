"""Tables, markdown report and plot of `bench/search_quality.py`, from its studies' figures."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

SINGLE = ("prune", "quant", "lowrank")
LATENCY_BUDGETS = (0.75, 0.5, 0.35)  # of the dense model's predicted latency
# Acceptance bars of issue #9 (on digits-resnet).
BAR_SINGLE, BAR_RANDOM, BAR_ES_SAVED, BAR_ES_LOST = 1.1, 1.2, 0.30, 0.03


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
    # Front points above the accuracy floor: uniform warm starts, allocated plans, plans the
    # sampler drew.
    front_warm: int = 0
    front_allocated: int = 0
    front_sampled: int = 0


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _f(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _hv(rows: list[StudyFigures]) -> tuple[float, float]:
    return _mean_std([r.hypervolume for r in rows])


def model_table(config_rows: dict[str, list[StudyFigures]], trials: int, seeds: int) -> str:
    budgets = " | ".join(f"best acc ≤{b:g}x" for b in LATENCY_BUDGETS)
    lines = [
        f"| config | studies | trials: complete / stopped / failed | hypervolume (mean ± std) "
        f"| {budgets} | front: warm / allocated / sampled (mean) | trial time min (mean) "
        "| search wall min (mean) |",
        "|---|---:|---:|---:|" + "---:|" * len(LATENCY_BUDGETS) + "---:|---:|---:|",
    ]
    for config, rows in config_rows.items():
        if not rows:
            empty = "| " * len(LATENCY_BUDGETS)
            lines.append(f"| {config} | 0 | not run yet | | {empty}| | |")
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
            f"{statistics.fmean(r.front_warm for r in rows):.1f} / "
            f"{statistics.fmean(r.front_allocated for r in rows):.1f} / "
            f"{statistics.fmean(r.front_sampled for r in rows):.1f} | "
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
        "two studies at a time they share the machine's cores. Front: the study's "
        "non-dominated trials above the accuracy floor, split into enqueued warm starts "
        "and plans the sampler drew (what the search found beyond the uniform plans).",
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
    import plotly.offline
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
        + bars.to_html(full_html=False, include_plotlyjs="directory")
        + fronts.to_html(full_html=False, include_plotlyjs=False)
        + "</body></html>"
    )
    path.write_text(html)
    # plotly.js beside the page, not inside it: each re-run then commits a few kB, not 4.7 MB.
    script = path.parent / "plotly.min.js"
    source = plotly.offline.get_plotlyjs()
    if not script.exists() or script.read_text() != source:
        script.write_text(source)
