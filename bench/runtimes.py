"""Searches on the deployment runtimes against each runtime's plain int8 model (issue 25).

Per (model, target, batch size), in one run on a quiet machine, 1 thread:
1. `autocompress search --model M --target T --batch-size B --max-drop 1% --trials N` as a
   user runs it (the target's own space, predicted latency, the front measured after), in a
   fresh folder; the plain alternatives are the ones the search itself measures and settles
   in the same session (the dense model in that runtime at fp32 and int8, PyTorch eager).
2. The front's fastest candidate within the 1-point budget against the runtime's plain int8
   model: latency ratio and accuracies, and where the plan came from (uniform warm start,
   allocated, sampled).
3. `autocompress export --pick fastest`: the runtime's artifact loaded from disk and timed in
   the runtime, against the latency the study measured for that candidate.

Writes reports/benchmarks/runtimes.md after each search (a long run leaves what it has).
Takes 10-40 minutes per search on 2 cores; run nothing else heavy beside it.

Usage: python bench/runtimes.py [--runs digits-resnet:cpu:onnxruntime:1,...] [--trials 30]
       [--out reports/benchmarks/runtimes.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from autocompress.report.table import plan_summary

# model:target:batch; the acceptance runs, ONNX Runtime at batch 1, OpenVINO at 32.
RUNS = (
    "digits-resnet:cpu:onnxruntime:1",
    "digits-resnet:cpu:openvino:32",
    "effnet-fmnist:cpu:onnxruntime:1",
    "effnet-fmnist:cpu:openvino:32",
    "minilm-sentiment:cpu:onnxruntime:1",
)
CLI = [sys.executable, "-m", "autocompress"]


def _run(args: list[str], workdir: Path) -> str:
    proc = subprocess.run([*CLI, *args], cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"autocompress {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def one_run(model: str, target: str, batch: int, trials: int, workdir: Path) -> dict[str, Any]:
    """The search, its front and alternatives, and the export of its fastest candidate."""
    import optuna

    study = f"{model}-{target}"
    started = time.time()
    search = ["search", "--model", model, "--target", target, "--batch-size", str(batch)]
    _run([*search, "--trials", str(trials), "--max-drop", "1%", "--quiet"], workdir)
    wall = time.time() - started
    front = json.loads(_run(["show", "--study", study, "--json"], workdir))
    storage = f"sqlite:///{workdir / 'reports' / 'autocompress.db'}"
    loaded = optuna.load_study(study_name=study, storage=storage)
    alternatives = [a for a in loaded.user_attrs.get("alternatives", []) if "latency_ms" in a]
    feasible = [c for c in front if c["feasible"]]
    fastest = min(feasible, key=lambda c: c["latency_ms"]) if feasible else None
    exported = None
    if fastest is not None:
        out = workdir / "deploy"
        try:
            _run(["export", "--study", study, "--trial", str(fastest["trial"]), "--out",
                  str(out)], workdir)  # fmt: skip
        except RuntimeError as exc:  # the search's figures stand; the failure is reported
            exported = {"error": str(exc)[-1500:]}
    if fastest is not None and exported is None:
        exported = json.loads((out / "metrics.json").read_text())
        onnx_file = out / "model.onnx"
        if onnx_file.exists() and target.endswith("onnxruntime"):  # ORT's profiler times ORT only
            exported["node_times"] = node_times(onnx_file, batch)
    return {
        "model": model,
        "target": target,
        "batch": batch,
        "date": str(datetime.date.today()),
        "torch": torch.__version__,
        "wall_s": wall,
        "trials": len(loaded.trials),
        "baseline": loaded.user_attrs["baseline"],
        "alternatives": alternatives,
        "front": front,
        # every finished trial, for what the front leaves out (plans over the 1-point budget)
        "trials_figures": [
            {
                "trial": t.number,
                "accuracy": t.user_attrs.get("accuracy"),
                "latency_ms": t.user_attrs.get("latency_ms"),
                "finetuned": t.user_attrs.get("finetuned"),
                "finetune_undone": t.user_attrs.get("finetune_undone", False),
                "origin": t.user_attrs.get("warm_start", "sampled"),
                "plan": plan_summary(t.user_attrs["plan"]) if "plan" in t.user_attrs else "",
            }
            for t in loaded.trials
            if t.state == optuna.trial.TrialState.COMPLETE
        ],
        "fastest": fastest,
        "exported": exported,
    }


def node_times(onnx_file: Path, batch: int, runs: int = 300) -> dict[str, Any]:
    """Where an ONNX Runtime session spends a run, from its own profiler (1 thread).

    Returns:
        run_us: median wall time of one `session.run`; nodes_us: the nodes' summed time per run;
        by_op: per op type, nodes in the graph and microseconds per run.
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_file.parent / "ort_profile")
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]  # static dims as exported
        dtype = np.int64 if "int64" in i.type else np.float32
        feeds[i.name] = (np.ones(shape) if dtype is np.int64 else np.random.rand(*shape)).astype(
            dtype
        )
    for _ in range(50):
        session.run(None, feeds)
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        walls.append(time.perf_counter() - t)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    us: Counter[str] = Counter()  # per op type, over every profiled run
    names: dict[str, set[str]] = defaultdict(set)  # per op type, the graph's nodes
    per_node: Counter[tuple[str, str]] = Counter()  # per node, over every profiled run
    for e in nodes:
        us[e["args"]["op_name"]] += e["dur"]
        names[e["args"]["op_name"]].add(e["name"])
        per_node[(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"])] += e["dur"]
    total_runs = runs + 50
    return {
        "run_us": 1e6 * sorted(walls)[len(walls) // 2],
        "nodes_us": us.total() / total_runs,
        "by_op": {
            op: {"nodes": len(names[op]), "us": total / total_runs}
            for op, total in us.most_common()
        },
        "by_node": [
            {"node": node, "op": op, "us": total / total_runs}
            for (node, op), total in per_node.most_common(10)
        ],
    }


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def section(r: dict[str, Any]) -> str:
    """One search's tables, in Markdown."""
    base = r["baseline"]
    lines = [
        f"## {r['model']} on {r['target']}, batch {r['batch']}",
        "",
        f"`python bench/runtimes.py --runs {r['model']}:{r['target']}:{r['batch']} --trials "
        f"{r['trials']}`, {r.get('date', '')}, torch {r.get('torch', '')}: {r['trials']} trials "
        f"in {r['wall_s'] / 60:.1f} min (profile, sensitivity, alternatives, trials, verify, "
        "report).",
        "",
        "| model | accuracy | ms | vs plain int8 |",
        "| --- | --- | --- | --- |",
    ]
    int8 = next((a for a in r["alternatives"] if a["label"].endswith(" int8")), None)
    ref = None if int8 is None else int8["latency_ms"]

    def vs(ms: float) -> str:
        return "" if ref is None else f"{ref / ms:.2f}x"

    lines.append(
        f"| dense in the runtime (fp32, the study's reference) | {_pct(base['accuracy'])} "
        f"| {_ms(base['latency_ms'])} | {vs(base['latency_ms'])} |"
    )
    for a in sorted(r["alternatives"], key=lambda a: a["latency_ms"]):
        lines.append(
            f"| plain alternative: {a['label']} | {_pct(a['accuracy'])} | {_ms(a['latency_ms'])} "
            f"| {vs(a['latency_ms'])} |"
        )
    for c in sorted(r["front"], key=lambda c: c["latency_ms"]):
        change = 100 * (c["accuracy"] - c["baseline_accuracy"])  # points vs the dense model
        fits = "" if c["feasible"] else ", over budget"
        lines.append(
            f"| front #{c['trial']} ({c.get('origin', '')}{fits}; {plan_summary(c['plan'])}) "
            f"| {_pct(c['accuracy'])} ({change:+.2f} pts) | {_ms(c['latency_ms'])} "
            f"| {vs(c['latency_ms'])} |"
        )
    fastest = r["fastest"]
    lines.append("")
    if fastest is None:
        lines.append("No front candidate within 1 point of the dense accuracy.")
    elif ref is not None:
        lines.append(
            f"Fastest candidate within 1 point: #{fastest['trial']}, "
            f"{_ms(fastest['latency_ms'])} ms, **{ref / fastest['latency_ms']:.2f}x** the plain "
            f"int8 model ({int8['label']}, {_ms(ref)} ms at {_pct(int8['accuracy'])})."
        )
    exported = r["exported"]
    if exported is not None and "error" in exported:
        lines += [
            "",
            "Export of the fastest candidate failed:",
            "",
            "```",
            exported["error"],
            "```",
        ]
    if exported is not None and exported.get("runtime"):
        rt = exported["runtime"]
        ratio = rt["latency_ms"] / exported["study_latency_ms"]
        # runs before the export timed the in-memory graph beside the file have no such ratio
        versus = rt.get("latency_vs_in_memory_ratio")
        beside = (
            ""
            if versus is None
            else f"{versus:.2f}x the in-memory graph the search timed, interleaved with it; "
        )
        lines.append(
            f"Exported ({rt['file']}, loaded from disk in {rt['runtime']}): {_ms(rt['latency_ms'])}"
            f" ms vs {_ms(exported['study_latency_ms'])} ms in the study ({ratio:.2f}x); "
            f"{beside}accuracy {_pct(rt['accuracy'])}."
        )
        times = exported.get("node_times")
        if times:
            lines += [
                "",
                f"Where its run goes (ONNX Runtime's profiler, batch {r['batch']}, 1 thread): "
                f"{times['run_us']:.0f} us per run, of which the nodes {times['nodes_us']:.0f} us; "
                "the rest is the session's own overhead (the profiler adds to both).",
                "",
                "| op type | nodes | us per run | share of the run |",
                "| --- | --- | --- | --- |",
            ]
            for op, row in list(times["by_op"].items())[:8]:
                lines.append(
                    f"| {op} | {row['nodes']} | {row['us']:.0f} | "
                    f"{100 * row['us'] / times['run_us']:.0f}% |"
                )
            if times.get("by_node"):
                lines += ["", "| slowest nodes | op | us per run | share of the run |"]
                lines.append("| --- | --- | --- | --- |")
                for row in times["by_node"]:
                    lines.append(
                        f"| `{row['node']}` | {row['op']} | {row['us']:.0f} | "
                        f"{100 * row['us'] / times['run_us']:.0f}% |"
                    )
    return "\n".join(lines) + "\n"


def _key(r: dict[str, Any]) -> tuple[str, str, int]:
    return (r["model"], r["target"], int(r["batch"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="model:target:batch, comma list")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/runtimes.md"))
    args = parser.parse_args()
    header = (
        "<!-- regenerated by bench/runtimes.py; do not edit by hand -->\n"
        "# Searches on the deployment runtimes against their plain int8 models\n\n"
        "Each section names the command that measured it (a run replaces its own section and "
        "keeps the others, from the JSON beside this file). 1 thread; every latency is the "
        "search's own: settled ratios to the dense model in the same runtime, timed in the same "
        "session; `--max-drop 1%`.\n"
    )
    raw = args.out.with_suffix(".json")  # every figure of every run, re-rendered each time
    kept = json.loads(raw.read_text()) if raw.exists() else []
    failed: dict[tuple[str, str, int], str] = {}
    for spec in args.runs.split(","):
        key = model, target, batch = _key_of(spec)
        with tempfile.TemporaryDirectory() as workdir:
            try:
                result = one_run(model, target, batch, args.trials, Path(workdir))
                kept = [r for r in kept if _key(r) != key] + [result]
                failed.pop(key, None)
            except RuntimeError as exc:
                failed[key] = str(exc)
        order = {k: i for i, k in enumerate(_key_of(s) for s in RUNS)}
        kept.sort(key=lambda r: order.get(_key(r), len(order)))
        raw.write_text(json.dumps(kept, indent=1))  # first: a run's figures outlive a render bug
        sections = [section(r) for r in kept]
        sections += [
            f"## {m} on {t}, batch {b}\n\nFailed: {e}\n" for (m, t, b), e in failed.items()
        ]
        args.out.write_text(header + "\n" + "\n".join(sections))
        print(f"{spec}: done -> {args.out}", flush=True)


def _key_of(spec: str) -> tuple[str, str, int]:
    model, rest = spec.split(":", 1)
    target, batch = rest.rsplit(":", 1)
    return (model, target, int(batch))


if __name__ == "__main__":
    main()
