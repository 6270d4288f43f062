"""How repeatable is a compiled plan's latency ratio, against the eager or the compiled dense model?

Why. The latency predictor is fitted on, and checked against, ratios of a deployed plan to the
dense model, each the median of paired rounds (`hardware.timing`). A plan with an int8 layer
deploys as one inductor-compiled graph, while the reference is the dense model in PyTorch
eager: two different code paths, which need not drift together. This measures the noise that
leaves in the ratio, the floor under any predictor's error on compiled plans.

What it does, on one model at 1 thread, batch 1 (digits-resnet by default):
- draws random plans from the default space that have an int8 layer (they deploy compiled);
- builds two of them (the probes) and, `--repeats` times, times each probe against the eager
  dense model and against the dense model compiled the same way (export, inductor with
  freezing and the C++ wrapper; no int8 layer), each with the target's default rounds;
- between repeats, builds and times two other plans, as a profile or a `--check` does, so the
  process ages as it would there;
- at the end, times the compiled dense model against the eager one (2x the rounds).

Per probe and reference: every ratio, its spread ((max - min) / median) and its coefficient of
variation. Writes a section of `reports/benchmarks/compiled_noise.md` and prints it.

Usage: python bench/compiled_noise.py [--model digits-resnet] [--repeats 5] [--seed 321]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import warnings
from pathlib import Path

import torch

REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmarks" / "compiled_noise.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="digits-resnet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=321, help="seed of the random plans")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the spread needs two measurements)")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    from autocompress.compress.apply import apply, bake, deploy_on
    from autocompress.compress.quantize_real import RealizedModel, _export
    from autocompress.hardware.targets import resolve_target
    from autocompress.latency.profile import measure_plan, random_plans
    from autocompress.optimize.latency import batch_inputs
    from autocompress.space.discover import discover
    from autocompress.space.spec import load_space
    from autocompress.zoo import load_model, load_task

    task = load_task(args.model)
    dense = load_model(args.model, task=task).eval()
    knobs = load_space("default").knobs(discover(dense, task.inputs()), model=dense)
    target = resolve_target("cpu", threads=1)
    inputs = batch_inputs(task, 1)
    drawn = random_plans(knobs, 60, seed=args.seed)
    plans = [
        p for p in drawn if any((c.weight_bits, c.act_bits) == (8, 8) for c in p.layers.values())
    ]
    if len(plans) < 2 + 2 * args.repeats:
        parser.error("too few compiled plans drawn; raise the number drawn or change --seed")

    def build(plan):
        candidate = apply(dense, plan, task.inputs())
        return deploy_on(target, candidate, plan, inputs, task.calibration_batches())

    compiled_dense = RealizedModel(_export(bake(dense), inputs), {}, compiled=True)
    compiled_dense(*inputs)  # compiles
    probes = [build(plans[0]), build(plans[1])]
    ratios: dict[tuple[int, str], list[float]] = {}
    for repeat in range(args.repeats):
        for k, probe in enumerate(probes):
            for label, reference in (("eager", dense), ("compiled", compiled_dense)):
                ratio = target.measure(probe, inputs, reference=reference).ratio
                assert ratio is not None
                ratios.setdefault((k, label), []).append(ratio)
            print(
                f"repeat {repeat} probe {k}: vs eager {ratios[k, 'eager'][-1]:.3f}, "
                f"vs compiled dense {ratios[k, 'compiled'][-1]:.3f}",
                flush=True,
            )
        for plan in plans[2 + 2 * repeat : 4 + 2 * repeat]:  # age the process as a profile does
            measure_plan(dense, plan, task, target, inputs)
    factor = target.measure(compiled_dense, inputs, reference=dense, rounds=2 * target.rounds)

    lines = [
        f"## {args.model} (`python bench/compiled_noise.py --model {args.model} "
        f"--repeats {args.repeats} --seed {args.seed}`, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"torch {torch.__version__}, 1 thread, batch 1, {target.rounds} rounds per measurement. "
        f"Compiled dense / eager dense: {factor.ratio:.3f}.",
        "",
        "| probe | reference | ratios, in order | spread | CV |",
        "|---|---|---|---:|---:|",
    ]
    for (k, label), values in ratios.items():
        spread = (max(values) - min(values)) / statistics.median(values)
        cv = statistics.stdev(values) / statistics.fmean(values)
        shown = ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {k} | dense {label} | {shown} | {spread:.1%} | {cv:.1%} |")
    text = "\n".join(lines) + "\n"
    header = (
        "# Noise of compiled plans' latency ratios\n\nWritten by `bench/compiled_noise.py`.\n\n"
    )
    old = args.out.read_text() if args.out.exists() else header
    sections = [s for s in old.split("\n## ") if not s.startswith(f"{args.model} ")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n## ".join(sections).rstrip("\n") + "\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
