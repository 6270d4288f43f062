"""Each compression method alone, at fixed levels, on every zoo CNN: size, real latency, accuracy.

What it measures. For each model (digits-cnn, digits-resnet, mnist1d-cnn) and each method applied
uniformly to every eligible layer found by `discover`:

- prune: keep_ratio 0.75 / 0.5 / 0.25 on every prunable layer (the output layer is excluded;
  layers of one coupling group get the same ratio, since the ratio is uniform);
- lowrank: rank_ratio 0.5 / 0.25 (layers `factorize` cannot factorize are skipped with its
  warning; the warnings are suppressed here and counted in the "skipped" column);
- sparse: 50% and 90% unstructured, 2:4;
- quant: (8, 8) static int8, (16, 32) bf16, (4, 32) int4 weights;
- share: 256, 64 and 16 shared values per layer (k-means codebook);
- gradual: keep 0.5 and 0.25 with the channels removed along the first half (or 3/4) of the
  fine-tune instead of before it (compare with the prune rows at the same keep ratio);

plus the dense model. Per row:

- size: `compressed_size_bytes(bake(model), plan)` after fine-tuning (dense: `size_bytes`);
- latency at batch 1 and batch 32: `deploy(...)` built for that batch (the example input repeated
  to the batch; real int8 kernels compiled by inductor, physically pruned/factorized layers),
  timed with `measure_latency` interleaved with the dense eager fp32 model at the same batch,
  1 thread; the table shows the candidate's median ms and the median of per-round ratios to
  dense (below 1 = faster) from that same run;
- accuracy: `task.metric` on `task.val` (never seen by fine-tuning) of the `apply()` model after
  a 60-step distillation fine-tune from the dense model (fake quantization for quant rows); for
  the quant rows also the accuracy of the deployed real-kernel model (int8 graph, bf16, ...).

Usage: python bench/methods.py [--models NAME ...] [--quick]
  --quick: fewer timing rounds and fine-tune steps (figures are noisier; says so in the report).
Writes reports/benchmarks/methods.md and prints the same tables.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from autocompress.compress.apply import apply, bake, deploy
from autocompress.compress.quantize_real import realize
from autocompress.compress.size import compressed_size_bytes, size_bytes
from autocompress.config import LayerConfig, Plan
from autocompress.evaluate.finetune import finetune
from autocompress.hardware.timing import measure_latency
from autocompress.space.discover import discover
from autocompress.zoo import load_model, load_task

MODELS = ("digits-cnn", "digits-resnet", "mnist1d-cnn")
BATCHES = (1, 32)
REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmarks" / "methods.md"

# (method, level label, config applied to each eligible layer)
METHODS: list[tuple[str, str, LayerConfig]] = [
    ("prune", "keep 0.75", LayerConfig(keep_ratio=0.75)),
    ("prune", "keep 0.5", LayerConfig(keep_ratio=0.5)),
    ("prune", "keep 0.25", LayerConfig(keep_ratio=0.25)),
    ("lowrank", "rank 0.5", LayerConfig(rank_ratio=0.5)),
    ("lowrank", "rank 0.25", LayerConfig(rank_ratio=0.25)),
    ("sparse", "50% unstr.", LayerConfig(sparsity=0.5)),
    ("sparse", "90% unstr.", LayerConfig(sparsity=0.9)),
    ("sparse", "2:4", LayerConfig(sparsity=0.5, sparsity_pattern="2:4")),
    ("quant", "int8 w8a8", LayerConfig(weight_bits=8, act_bits=8)),
    ("quant", "bf16 w16a32", LayerConfig(weight_bits=16)),
    ("quant", "int4 w4a32", LayerConfig(weight_bits=4)),
    ("share", "256 values", LayerConfig(share_values=256)),
    ("share", "64 values", LayerConfig(share_values=64)),
    ("share", "16 values", LayerConfig(share_values=16)),
    # gradual pruning: the same widths as the prune rows, removed along the fine-tune
    ("gradual", "keep 0.5, ramp 0.5", LayerConfig(keep_ratio=0.5, prune_ramp=0.5)),
    ("gradual", "keep 0.5, ramp 0.75", LayerConfig(keep_ratio=0.5, prune_ramp=0.75)),
    ("gradual", "keep 0.25, ramp 0.5", LayerConfig(keep_ratio=0.25, prune_ramp=0.5)),
]


@dataclass
class Row:
    method: str
    level: str
    size: int
    size_ratio: float
    ms: dict[int, float] = field(default_factory=dict)
    ratio: dict[int, float] = field(default_factory=dict)
    accuracy: float = float("nan")
    deployed_accuracy: float | None = None
    skipped: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


def _batched(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """The example input repeated to `batch` rows (the example has batch 1)."""
    return tuple(x[:1].repeat(batch, *([1] * (x.dim() - 1))).contiguous() for x in inputs)


def _caller(model: object, inputs: tuple[torch.Tensor, ...]):
    def call() -> object:
        with torch.no_grad():
            return model(*inputs)

    return call


def _plan(layers, method: str, config: LayerConfig) -> Plan:
    if method in ("prune", "gradual"):
        eligible = [info.name for info in layers if info.prunable]
    else:
        eligible = [info.name for info in layers]
    return Plan({name: config for name in eligible})


def _time(deployed, dense: nn.Module, inputs, rounds: int):
    m = measure_latency(_caller(deployed, inputs), _caller(dense, inputs), threads=1, rounds=rounds)
    return m.median_ms, m.ratio, m.reference_ms


def bench_model(
    name: str, *, steps: int, rounds: int, train_threads: int
) -> tuple[list[Row], dict]:
    task = load_task(name)
    dense = load_model(name, task=task).eval()
    inputs = task.inputs()
    layers = discover(dense, inputs)
    calibration = task.calibration_batches()
    dense_size = size_bytes(dense)
    dense_acc = task.metric(dense, task.val)
    info = {"layers": len(layers), "prunable": sum(info.prunable for info in layers)}

    rows: list[Row] = []
    started = time.perf_counter()
    dense_row = Row("dense", "fp32", dense_size, 1.0, accuracy=dense_acc)
    for b in BATCHES:
        x = _batched(inputs, b)
        dense_row.ms[b], dense_row.ratio[b], _ = _time(dense, dense, x, rounds)
    dense_row.seconds = time.perf_counter() - started
    rows.append(dense_row)
    # The same fp32 model through the deploy path (exported, compiled by inductor, no
    # quantization): separates what compilation alone buys from what low bits buy.
    started = time.perf_counter()
    compiled_row = Row("dense", "fp32 compiled", dense_size, 1.0, accuracy=dense_acc)
    for b in BATCHES:
        x = _batched(inputs, b)
        compiled = realize(bake(dense), {}, x, calibration)
        compiled_row.ms[b], compiled_row.ratio[b], _ = _time(compiled, dense, x, rounds)
    compiled_row.seconds = time.perf_counter() - started
    rows.append(compiled_row)
    print(f"  {name} dense: acc {dense_acc:.4f}, size {dense_size}", flush=True)

    for method, level, config in METHODS:
        started = time.perf_counter()
        plan = _plan(layers, method, config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(0)
            model = apply(dense, plan, inputs)
            skipped = sum("not factorizing" in str(w.message) for w in caught)
            torch.set_num_threads(train_threads)
            try:
                finetune(model, dense, task, steps=steps)
            finally:
                torch.set_num_threads(1)
            model.eval()
            accuracy = task.metric(model, task.val)
            size = compressed_size_bytes(bake(model), plan)
            row = Row(method, level, size, size / dense_size, accuracy=accuracy, skipped=skipped)
            for b in BATCHES:
                x = _batched(inputs, b)
                try:
                    deployed = deploy(model, plan, x, calibration)
                    row.ms[b], row.ratio[b], _ = _time(deployed, dense, x, rounds)
                except Exception as error:  # a deploy failure is a finding: record it, go on
                    row.ms[b] = row.ratio[b] = math.nan
                    row.errors.append(f"deploy at batch {b}: {_one_line(error)}")
            if method == "quant":
                val_input = next(iter(task.val))[0]
                val_input = val_input if isinstance(val_input, tuple) else (val_input,)
                try:
                    deployed = deploy(model, plan, val_input, calibration)
                    row.deployed_accuracy = task.metric(deployed, task.val)
                except Exception as error:
                    row.errors.append(f"deploy for accuracy: {_one_line(error)}")
        row.seconds = time.perf_counter() - started
        rows.append(row)
        dep = "" if row.deployed_accuracy is None else f" (deployed {row.deployed_accuracy:.4f})"
        print(
            f"  {name} {method} {level}: acc {accuracy:.4f}{dep}, size x{row.size_ratio:.3f}, "
            f"b1 x{row.ratio[1]:.2f}, b32 x{row.ratio[32]:.2f}, {row.seconds:.0f} s",
            flush=True,
        )
    return rows, info


def table(rows: list[Row]) -> str:
    dense_acc = rows[0].accuracy
    lines = [
        "| method | level | size (B) | size ×dense | b1 ms | b1 ×dense | b32 ms | b32 ×dense "
        "| acc (fine-tuned) | Δacc | acc deployed | skipped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dep = "" if r.deployed_accuracy is None else f"{r.deployed_accuracy:.4f}"
        lines.append(
            f"| {r.method} | {r.level} | {r.size:,} | {r.size_ratio:.3f} | {r.ms[1]:.4f} | "
            f"{r.ratio[1]:.2f} | {r.ms[32]:.4f} | {r.ratio[32]:.2f} | {r.accuracy:.4f} | "
            f"{r.accuracy - dense_acc:+.4f} | {dep} | {r.skipped or ''} |"
        )
    notes = [f"- {r.method} {r.level}: {error}" for r in rows for error in r.errors]
    if notes:
        lines += ["", "Failures (the row's cell shows nan):", *notes]
    return "\n".join(lines)


def summary(results: dict[str, tuple[list[Row], dict]]) -> str:
    """Plain statements derived from the measured rows (no hand-written claims)."""
    out = []
    for name, (rows, _) in results.items():
        dense_acc = rows[0].accuracy
        by = {(r.method, r.level): r for r in rows}
        comp = by[("dense", "fp32 compiled")]
        methods = [r for r in rows if r.method != "dense"]
        fast = [r for r in methods if r.ratio[32] < 0.9]
        slow1 = [r for r in methods if r.ratio[1] > 1.1]
        slow32 = [r for r in methods if r.ratio[32] > 1.1]
        size_only = [r for r in methods if r.size_ratio < 0.9 and min(r.ratio.values()) >= 0.9]
        good = [
            r
            for r in methods
            if r.accuracy >= dense_acc - 0.01 and not any(map(math.isnan, r.ratio.values()))
        ]
        best = min(good, key=lambda r: r.ratio[32]) if good else None
        smallest = min(good, key=lambda r: r.size) if good else None
        int8 = by[("quant", "int8 w8a8")]

        def names(rs: list[Row], b: int | None = None) -> str:
            if not rs:
                return "none"
            return ", ".join(
                f"{r.method} {r.level}" + (f" ({r.ratio[b]:.2f}x)" if b else "") for r in rs
            )

        if int8.deployed_accuracy is None:
            deployed_acc, difference = "not measured (deploy failed)", "n/a"
        else:
            deployed_acc = f"{int8.deployed_accuracy:.4f}"
            difference = f"{int8.deployed_accuracy - int8.accuracy:+.4f}"
        failures = "; ".join(int8.errors)
        text_fail = f" int8 deploy failures: {failures}." if failures else ""
        text = (
            f"**{name}**: the dense model compiled without quantization runs at "
            f"{comp.ratio[1]:.2f}x (b1) / {comp.ratio[32]:.2f}x (b32) of eager fp32 (the quant "
            f"rows are compiled graphs, so this is the share of their time that compilation "
            f"alone explains). Faster than dense at b32 (<0.9x): "
            f"{names(fast, 32)}. Slower than dense (>1.1x) at b1: {names(slow1, 1)}; at b32: "
            f"{names(slow32, 32)}. Size only (smaller, no faster than 0.9x of dense at either "
            f"batch): {names(size_only)}. "
            + (
                "Real int8: not timed (deploy failed, see below); accuracy "
                if math.isnan(int8.ratio[32])
                else f"Real int8: {int8.ratio[32]:.2f}x at b32 "
                f"({1 / int8.ratio[32]:.1f}x faster; vs compiled fp32 "
                f"{comp.ratio[32] / int8.ratio[32]:.1f}x), {int8.ratio[1]:.2f}x at b1; accuracy "
            )
            + f"fake-quant {int8.accuracy:.4f} vs deployed {deployed_acc} ({difference})."
        )
        if best is not None and smallest is not None:
            text += (
                f" Within 1 point of dense accuracy, the fastest at b32 is {best.method} "
                f"{best.level} ({best.ratio[32]:.2f}x) and the smallest is {smallest.method} "
                f"{smallest.level} ({smallest.size_ratio:.3f}x the bytes)."
            )
        out.append(text + text_fail)
    return "\n\n".join(out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)

    rounds = 7 if args.quick else 15
    steps = 60
    load = float(load_average()) if load_average() != "?" else 99.0
    train_threads = 2 if load < 0.5 else 1
    torch.set_num_threads(1)
    command = "python bench/methods.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    results: dict[str, tuple[list[Row], dict]] = {}
    for name in args.models:
        print(f"{name}:", flush=True)
        results[name] = bench_model(name, steps=steps, rounds=rounds, train_threads=train_threads)
        # Written after each model, so a later crash keeps what was measured.
        text = report(results, time.perf_counter() - started, args, command, rounds, steps, load)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    wall = time.perf_counter() - started
    print(text)
    print(f"wall time {wall:.0f} s; wrote {args.out}")
    return 0


def report(results, wall, args, command, rounds, steps, load) -> str:
    train_threads = 2 if load < 0.5 else 1
    header = [
        "# Compression methods alone: size, real latency, accuracy",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_name()} ({torch.get_num_threads()} timing thread; "
        f"bf16 native: {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())})",
        f"- torch {torch.__version__}, Python {platform.python_version()}",
        f"- threads: timing 1; fine-tuning {train_threads} (load average at start {load})",
        f"- command: `{command.strip()}`",
        f"- fine-tune: {steps} distillation steps; timing: {rounds} interleaved rounds "
        "(median of per-round candidate/dense ratios)",
        f"- wall time: {wall / 60:.1f} min for {', '.join(results)} (of {', '.join(args.models)})",
        "",
        "Each method is applied alone and uniformly to every eligible layer (prune: all but the "
        "output layer). Size: compact stored bytes (`compressed_size_bytes`). Latency: the "
        "deployable model (`deploy`, real int8 kernels compiled by inductor; pruned/factorized "
        "layers physically smaller; sparse weights run as dense float) against the dense eager "
        "fp32 model at the same batch, 1 thread; ×dense < 1 is faster. Accuracy: top-1 on the "
        "validation split after the fine-tune (fake quant for quant rows); *acc deployed* is the "
        "real-kernel model's accuracy. *skipped*: layers low-rank left alone (with a warning).",
    ]
    if args.quick:
        header += ["", f"**--quick**: {rounds} timing rounds instead of 15; ratios are noisier."]
    parts = ["\n".join(header)]
    for name, (rows, info) in results.items():
        parts.append(
            f"## {name}\n\n{info['layers']} Conv/Linear layers, {info['prunable']} prunable.\n\n"
            + table(rows)
        )
    parts.append("## What the numbers say\n\n" + summary(results))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
