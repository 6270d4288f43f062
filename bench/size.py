"""A trial's size_bytes against the model.pt2 that `autocompress export` writes for it.

What it measures. For each zoo CNN and N random plans of its joint spaces (half from
default.yaml, half from cnn.yaml, drawn as `latency.profile.random_plans` draws them, every
fourth without 8-bit weights so that eager plans are in the mix):

- recorded: `evaluate_plan(ctx, plan)["size_bytes"]`, the trial's own code: apply, fine-tune
  (`--steps`, threads as a search picks them), score, then `artifact_size_bytes` (the trial's
  latency comes from a stand-in predictor: it plays no part in the size);
- exported: the plan rebuilt the way `export.rebuild` does (apply, the same fine-tune on the
  same batches with 1 thread, `deploy` with int8 compiled by inductor), written by export's
  writer (`save_program(deployable_program(...))`), and the file's bytes;
- error: |recorded - exported| / exported; and, for comparison, the error of the count of
  each tensor in its compact encoding (`compressed_size_bytes`, what trials recorded before);
- cost: the seconds `artifact_size_bytes` took inside the trial (what a trial pays for an
  exact size), as CPU time of this process and as wall-clock time.

Usage: python bench/size.py [--models NAME ...] [--plans 20] [--steps 20] [--seed 0]
Writes reports/benchmarks/size.md and prints the same table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import autocompress.optimize.objectives as objectives
from autocompress.compress.apply import apply, bake, deploy
from autocompress.compress.program import deployable_program, save_program
from autocompress.compress.size import compressed_size_bytes
from autocompress.config import Budget
from autocompress.evaluate.finetune import finetune
from autocompress.hardware.targets import resolve_target
from autocompress.hardware.timing import torch_threads
from autocompress.latency.profile import random_plans
from autocompress.optimize.latency import batch_inputs
from autocompress.optimize.objectives import SearchContext, fixed_data_order
from autocompress.optimize.record import Baseline
from autocompress.space.discover import discover
from autocompress.space.spec import load_space
from autocompress.zoo import load_model, load_task

MODELS = ("digits-cnn", "digits-resnet", "mnist1d-cnn")
SPACES = ("default", "cnn")
REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmarks" / "size.md"


class _NoLatency:
    """A predictor that predicts the dense latency: the trial then measures nothing."""

    def predict_ratio(self, plan: Any) -> float:
        return 1.0


def _timed(real: Any, seconds: list[tuple[float, float]]) -> Any:
    """`real` (the trial's `artifact_size_bytes`), appending each call's (CPU, wall) seconds."""

    def timed(*args: Any, **kwargs: Any) -> int:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            seconds.append((time.process_time() - cpu, time.perf_counter() - wall))

    return timed


def measure(name: str, plans: int, steps: int, seed: int, out: Path) -> dict[str, Any]:
    """Recorded vs exported bytes for `plans` random plans of one model."""
    dense, task = load_model(name).eval(), load_task(name)
    inputs = batch_inputs(task, 1)
    layers = discover(dense, task.inputs())
    knobs = {space: load_space(space).knobs(layers, model=dense) for space in SPACES}
    ctx = SearchContext(
        dense=dense,
        task=task,
        target=resolve_target("cpu"),
        budget=Budget(),
        knobs=[],
        round_to=None,
        finetune_steps=steps,
        train_threads=None,
        latency_inputs=inputs,
        baseline=Baseline(accuracy=1.0, latency_ms=1.0, size_bytes=1, params=1),
        predictor=_NoLatency(),  # type: ignore[arg-type]
    )
    drawn = [
        (space, plan)
        for space in SPACES
        for plan in random_plans(knobs[space], plans // 2, seed=seed, eager_plans=True)
    ]
    seconds: list[tuple[float, float]] = []
    real = objectives.artifact_size_bytes
    objectives.artifact_size_bytes = _timed(real, seconds)
    rows = []
    try:
        for i, (space, plan) in enumerate(drawn):
            recorded = objectives.evaluate_plan(ctx, plan)["size_bytes"]
            candidate = apply(dense, plan, task.inputs())
            with torch_threads(1):
                with fixed_data_order(task):
                    finetune(candidate, dense, task, steps=steps)
                task.metric(candidate, task.val)
                with fixed_data_order(task):
                    deployable = deploy(candidate, plan, inputs, task.calibration_batches())
            counted = compressed_size_bytes(bake(candidate), plan)
            path = out / f"{name}-{i}.pt2"
            save_program(deployable_program(deployable, inputs), path)
            exported = path.stat().st_size
            kinds = sorted(set(getattr(deployable, "layers", {}).values()))
            error, old = (abs(n - exported) / exported for n in (recorded, counted))
            rows.append((space, recorded, exported, error, old))
            print(
                f"{name} {i:2d} {space:7s} recorded {recorded:8d} exported {exported:8d} "
                f"error {error:.4%} (compact count {old:+.1%}) size cost "
                f"{seconds[-1][0]:.2f} s CPU, {seconds[-1][1]:.2f} s wall  {', '.join(kinds)}",
                flush=True,
            )
    finally:
        objectives.artifact_size_bytes = real
    errors, old = [r[3] for r in rows], [r[4] for r in rows]
    cpu, wall = [s[0] for s in seconds], [s[1] for s in seconds]
    return {
        "model": name,
        "plans": len(rows),
        "worst": max(errors),
        "median": statistics.median(errors),
        "old_worst": max(old),
        "old_median": statistics.median(old),
        "cpu_median_s": statistics.median(cpu),
        "cpu_max_s": max(cpu),
        "wall_median_s": statistics.median(wall),
        "wall_max_s": max(wall),
        "smallest": min(r[2] for r in rows),
        "largest": max(r[2] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # layers a method cannot take: plans stay valid
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            measure(name, args.plans, args.steps, args.seed, Path(tmp)) for name in args.models
        ]
    lines = [
        "# size_bytes vs the exported model.pt2",
        "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}; `python bench/size.py --plans {args.plans} --steps {args.steps} "
        f"--seed {args.seed}`. Random joint-space plans (default.yaml and cnn.yaml), trial "
        "fine-tune with the search's thread choice, export rebuild with 1 thread.",
        "",
        "| model | plans | model.pt2 bytes | size_bytes error, worst / median | compact count "
        "error, worst / median | size cost per trial, CPU median / max | wall median / max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['plans']} | {r['smallest']}-{r['largest']} | "
            f"{r['worst']:.3%} / {r['median']:.3%} | {r['old_worst']:.1%} / "
            f"{r['old_median']:.1%} | {r['cpu_median_s']:.2f} s / {r['cpu_max_s']:.2f} s | "
            f"{r['wall_median_s']:.2f} s / {r['wall_max_s']:.2f} s |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
