"""The whole pipeline on the pretrained zoo models, as a user runs it (issue 23, section 4).

Per model (effnet-fmnist, minilm-sentiment), in one run on a quiet machine, 1 thread:
1. The dense model: fp32 accuracy on the search's validation split, `model.pt2`-style size
   (the state dict's bytes), latency in PyTorch eager at batch 1 and 32; beside it the plain
   alternatives a user could deploy without a search: ONNX Runtime fp32 and int8, OpenVINO
   fp32 and int8, each timed as a ratio to eager interleaved with it, settled like the
   search's candidates (twice, a third time on a >3% disagreement), with its accuracy.
2. `autocompress profile --model M --target T --check 30 --refresh` (the target's space, batch
   1): profile wall time, then the predictor's accuracy on 30 fresh plans, each built and
   measured.
3. `autocompress search --model M --target T --trials 30 --max-drop 1%` (the target's space;
   the profile of step 2 is reused) as a subprocess: wall time split into preparing (load,
   dense latency, sensitivity and allocation, plain alternatives), the 30 trials and the end
   (verify of the front, report); the front from `show --json`, where each plan came from,
   and its fastest candidate within the 1-point budget, measured.

`--target` defaults to the search's own default (cpu:onnxruntime).

Each model's section is written to the table as soon as it is done. Takes about an hour per
model on 2 cores; run nothing else heavy beside it.

Usage: python bench/zoo_pipeline.py [--models effnet-fmnist,minilm-sentiment] [--trials 30]
       [--check 30] [--target cpu:onnxruntime] [--out reports/benchmarks/zoo_pipeline.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.config import DEFAULT_TARGET

BATCHES = (1, 32)
RUNTIMES = ("cpu:onnxruntime", "cpu:openvino")


def dense_figures(name: str) -> dict[str, Any]:
    """fp32 accuracy, size and eager latency of the dense model, and the plain alternatives."""
    from autocompress.hardware.targets import EAGER_ALTERNATIVE, resolve_target
    from autocompress.optimize.latency import batch_inputs
    from autocompress.zoo import load_model, load_task

    task = load_task(name)
    dense = load_model(name, task=task).eval()
    buffer = io.BytesIO()
    torch.save(dense.state_dict(), buffer)
    row: dict[str, Any] = {
        "params": sum(p.numel() for p in dense.parameters()),
        "accuracy": float(task.metric(dense, task.val)),
        "size_bytes": buffer.getbuffer().nbytes,
        "latency": {},
    }
    calibration = task.calibration_batches()
    for batch in BATCHES:
        inputs = batch_inputs(task, batch)
        timed: dict[str, Any] = {}
        for spec in RUNTIMES:
            target = resolve_target(spec, threads=1)
            builders = target.alternatives(dense, inputs, calibration)
            eager = builders.pop(EAGER_ALTERNATIVE)()
            for label, build in builders.items():
                model = build()
                m = target.measure_settled(model, inputs, reference=eager)
                timed.setdefault("dense, PyTorch eager fp32", []).append(m.reference_ms)
                accuracy = row.setdefault("accuracies", {}).get(label)
                if accuracy is None:  # the same model at every batch size
                    accuracy = float(task.metric(model, task.val))
                    row["accuracies"][label] = accuracy
                timed[label] = {"ms": m.median_ms, "ratio": m.ratio}
        eager_runs = timed.pop("dense, PyTorch eager fp32")
        row["latency"][batch] = {"eager_ms": sorted(eager_runs)[len(eager_runs) // 2], **timed}
    return row


def profile_figures(name: str, check: int, target: str) -> dict[str, Any]:
    """Profile the model afresh (the target's space, batch 1) and check the predictor."""
    from autocompress.optimize.latency import profile

    start = time.perf_counter()
    result = profile(name, target=target, check=check, refresh=True, show_progress=False)
    wall = time.perf_counter() - start
    assert result.check is not None
    return {
        "profile_s": result.seconds,
        "check_s": wall - result.seconds,
        "kernels": result.kernels,
        "plans": result.plans,
        "within10": result.check.within(0.10),
        "within5": result.check.within(0.05),
        "mape": result.check.mape(),
        "spearman": result.check.spearman(),
        "n": len(result.check.measured),
    }


def search_figures(name: str, trials: int, target: str, workdir: Path) -> dict[str, Any]:
    """README's search with `--max-drop 1%`, timed from outside, and its front."""
    import optuna

    study = f"{name}-{target}"
    cli = [sys.executable, "-m", "autocompress"]
    start = time.time()
    search = ["search", "--model", name, "--target", target, "--trials", str(trials)]
    subprocess.run(
        [*cli, *search, "--max-drop", "1%", "--quiet"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    end = time.time()
    shown = subprocess.run(
        [*cli, "show", "--study", study, "--json"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    front = json.loads(shown.stdout)
    storage = f"sqlite:///{workdir / 'reports' / 'autocompress.db'}"
    loaded = optuna.load_study(study_name=study, storage=storage)
    done = [t for t in loaded.trials if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done).timestamp()
    last = max(t.datetime_complete for t in done).timestamp()
    alternatives = loaded.user_attrs.get("alternatives", [])
    feasible = [c for c in front if c["feasible"]]
    fastest = min(feasible, key=lambda c: c["latency_ms"]) if feasible else None
    return {
        "wall_s": end - start,
        "prepare_s": first - start,
        "trials_s": last - first,
        "end_s": end - last,
        "trials": len(done),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in loaded.trials),
        "baseline": loaded.user_attrs["baseline"],
        "alternatives": [a for a in alternatives if "latency_ms" in a],
        "front": front,
        "fastest": fastest,
    }


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def section(
    name: str,
    command: str,
    dense: dict[str, Any],
    prof: dict[str, Any] | None,
    run: dict[str, Any] | None,
) -> str:
    """One model's tables, in Markdown, under the command that made them; a step not run yet
    (None) says so."""
    lines = [
        f"## {name}",
        "",
        command,
        "",
        f"{dense['params'] / 1e6:.2f}M parameters, fp32 accuracy {100 * dense['accuracy']:.2f}% "
        f"on the search's validation split, state dict {dense['size_bytes'] / 1e6:.2f} MB.",
        "",
        "### The dense model and the plain alternatives (1 thread)",
        "",
        "| model | accuracy | batch 1 ms | vs eager | batch 32 ms | vs eager |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    b1, b32 = dense["latency"][1], dense["latency"][32]
    lines.append(
        f"| dense, PyTorch eager fp32 | {100 * dense['accuracy']:.2f}% | {_ms(b1['eager_ms'])} "
        f"| 1.00x | {_ms(b32['eager_ms'])} | 1.00x |"
    )
    for label, accuracy in dense["accuracies"].items():
        one, many = b1[label], b32[label]
        lines.append(
            f"| {label} | {100 * accuracy:.2f}% | {_ms(one['ms'])} | {1 / one['ratio']:.2f}x "
            f"| {_ms(many['ms'])} | {1 / many['ratio']:.2f}x |"
        )
    if prof is None:
        return "\n".join([*lines, "", "Profile and search: not run yet."]) + "\n"
    lines += [
        "",
        f"### Profile on {dense['target']} (its space, batch 1) and the predictor on fresh plans",
        "",
        "| profile | kernel sizes | whole plans | check (build + time) | n | within 10% "
        "| within 5% | MAPE | Spearman |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {prof['profile_s'] / 60:.1f} min | {prof['kernels']} | {prof['plans']} "
        f"| {prof['check_s'] / 60:.1f} min | {prof['n']} | {prof['within10']:.2f} "
        f"| {prof['within5']:.2f} | {100 * prof['mape']:.1f}% | {prof['spearman']:.2f} |",
    ]
    if run is None:
        return "\n".join([*lines, "", "Search: not run yet."]) + "\n"
    lines += [
        "",
        f"### Search on {dense['target']}: {run['trials']} trials, `--max-drop 1%`, its space",
        "",
        "| wall | preparing (dense, sensitivity, alternatives) | trials | verify + report "
        "| failed |",
        "| --- | --- | --- | --- | --- |",
        f"| {run['wall_s'] / 60:.1f} min | {run['prepare_s'] / 60:.1f} min "
        f"| {run['trials_s'] / 60:.1f} min | {run['end_s'] / 60:.1f} min | {run['failed']} |",
        "",
        "| front | accuracy | drop | ms (measured) | vs dense | size kB | within budget | plan "
        "| from |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = run["baseline"]
    for c in run["front"]:
        drop = 100 * (c["baseline_accuracy"] - c["accuracy"])
        ms = c["measured_ms"] if c["measured_ms"] is not None else c["latency_ms"]
        lines.append(
            f"| #{c['trial']} | {100 * c['accuracy']:.2f}% | {drop:+.2f} | {_ms(ms)} "
            f"| {base['latency_ms'] / ms:.2f}x | {c['size_bytes'] / 1000:.0f} "
            f"| {'yes' if c['feasible'] else 'no'} | {_plan(c['plan'])} | {c.get('origin', '')} |"
        )
    fastest = run["fastest"]
    alts = sorted(run["alternatives"], key=lambda a: a["latency_ms"])
    alt_text = "; ".join(
        f"{a['label']} {_ms(a['latency_ms'])} ms at {100 * a['accuracy']:.2f}%" for a in alts
    )
    lines += ["", f"Plain alternatives the search measured (batch 1): {alt_text or 'none'}."]
    if fastest is not None and alts:
        best = alts[0]
        lines.append(
            f"Fastest candidate within the budget: #{fastest['trial']} at "
            f"{_ms(fastest['latency_ms'])} ms, {best['latency_ms'] / fastest['latency_ms']:.2f}x "
            f"the fastest plain alternative ({best['label']})."
        )
    return "\n".join(lines) + "\n"


def _earlier_sections(path: Path) -> dict[str, str]:
    """The per-model sections an earlier run wrote to `path`, by model name, in order."""
    if not path.exists():
        return {}
    _, *parts = path.read_text().split("\n## ")
    return {part.split("\n", 1)[0]: "## " + part for part in parts}


def _plan(plan: dict[str, Any]) -> str:
    """A plan in a few words: layers per method."""
    layers = plan.get("layers", {})
    counts: dict[str, int] = {}
    for cfg in layers.values():
        for knob in cfg:
            counts[knob] = counts.get(knob, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "dense"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet-fmnist,minilm-sentiment")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--check", type=int, default=30)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="profile and search target")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/zoo_pipeline.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = (
        "<!-- regenerated by bench/zoo_pipeline.py; do not edit by hand -->\n"
        "# The pipeline on the pretrained zoo models\n\n"
        "Each model's section was written by the command under its title (a run of some models "
        "keeps the other models' sections).\n"
    )
    command = (
        f"`python bench/zoo_pipeline.py --models {{name}} --trials {args.trials} "
        f"--check {args.check} --target {args.target}`, {datetime.date.today()}, "
        f"torch {torch.__version__}, 1 thread, batch 1 unless stated."
    )
    sections = _earlier_sections(args.out)

    def write(name: str, current: str) -> None:  # after each step: a long run leaves what it has
        sections[name] = current
        args.out.write_text(header + "\n" + "\n".join(sections.values()))

    for name in args.models.split(","):
        started = time.perf_counter()
        line = command.format(name=name)
        dense = {**dense_figures(name), "target": args.target}
        write(name, section(name, line, dense, None, None))
        print(f"{name}: dense figures in {(time.perf_counter() - started) / 60:.1f} min")
        prof = profile_figures(name, args.check, args.target)
        write(name, section(name, line, dense, prof, None))
        print(f"{name}: profiled in {(time.perf_counter() - started) / 60:.1f} min")
        with tempfile.TemporaryDirectory() as workdir:
            run = search_figures(name, args.trials, args.target, Path(workdir))
        write(name, section(name, line, dense, prof, run))
        print(f"{name}: done in {(time.perf_counter() - started) / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
