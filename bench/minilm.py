"""The minilm acceptance run: a predicted-latency search on all-MiniLM-L6-v2 and its front.

What it measures (1 thread, batch 1, 128 tokens, `search_spaces/transformer.yaml`):
- profile: the latency predictor for minilm in this space (cached after the first run;
  its own wall time is reported apart from the search's);
- search: `--trials` trials with predicted latency, `--max-drop 5%` on cosine fidelity
  (cosine >= 0.95), distillation fine-tune per trial, early stopping (a trial far below the
  budget at a quarter of its fine-tune stops there); wall time from start to the verified
  front (baseline, trials, verify step that builds and measures every front candidate, report);
- the front: per candidate its cosine fidelity, probe top-1 (fitted on the original
  embeddings), predicted and measured latency (median of paired per-round ratios to the dense
  model, interleaved), speed-up and size ratio vs fp32; and whether one candidate meets the
  bar: >= 3x faster, >= 4x smaller, cosine >= 0.95, probe within 2 points of fp32.
- the plain alternative: every Linear dynamic int8 (no search, no fine-tune), measured the same way.

Usage: python bench/minilm.py [--trials 50] [--steps 12] [--plans 16] [--no-early-stop]
       [--out reports/benchmarks/minilm.md]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

MODEL = "minilm"
SPACE = "transformer"


def _row(c: dict[str, Any], probe: float | None, base: dict[str, Any]) -> str:
    speed = base["latency_ms"] / c["measured_ms"] if c["measured_ms"] else float("nan")
    size = base["size_bytes"] / c["size_bytes"]
    probe_text = "-" if probe is None else f"{100 * probe:.1f}"
    predicted = "-" if c["predicted_ms"] is None else f"{c['predicted_ms']:.1f}"
    return (
        f"| {c['trial']} | {c['accuracy']:.4f} | {probe_text} | {predicted} | "
        f"{c['measured_ms']:.1f} | {speed:.2f}x | {c['size_bytes'] / 1e6:.1f} | {size:.2f}x |"
    )


def _plain_int8(base_ms: float) -> str:
    """Every Linear dynamic int8 (and nothing else): built, measured, scored without fine-tune."""
    from autocompress import zoo
    from autocompress.config import LayerConfig, Plan
    from autocompress.hardware.targets import resolve_target
    from autocompress.latency.profile import measure_plan
    from autocompress.optimize.latency import batch_inputs
    from autocompress.space.discover import discover

    dense, task = zoo.load_model(MODEL), zoo.load_task(MODEL)
    linears = [i.name for i in discover(dense, task.inputs()) if i.type == "Linear"]
    plan = Plan(layers={n: LayerConfig(weight_bits=8) for n in linears})
    ratio = measure_plan(dense, plan, task, resolve_target("cpu", threads=1), batch_inputs(task, 1))
    from autocompress.compress.apply import apply

    candidate = apply(dense, plan, task.inputs())
    cosine = task.metric(candidate, task.val)
    probe = task.extra_metrics["probe_top1"](candidate, task.val)
    return (
        f"| plain int8 (all Linear dynamic, no fine-tune) | {cosine:.4f} | {100 * probe:.1f} | - | "
        f"{ratio * base_ms:.1f} | {1 / ratio:.2f}x | - | - |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--steps", type=int, default=12, help="fine-tune steps per trial")
    parser.add_argument(
        "--no-early-stop", dest="early_stop", action="store_false", help="fine-tune every trial"
    )
    parser.add_argument("--plans", type=int, default=16, help="calibration plans to profile")
    parser.add_argument("--storage", default=None, help="default: a fresh temporary SQLite file")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/minilm.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from autocompress.api import search
    from autocompress.config import Budget
    from autocompress.hardware.targets import CpuTarget
    from autocompress.optimize.latency import profile
    from autocompress.optimize.study import load_study

    started = time.monotonic()
    prof = profile(MODEL, space=SPACE, plans=args.plans, show_progress=False)
    profile_s = time.monotonic() - started
    storage = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='minilm-bench-')}/study.db"
    study_name = f"minilm-bench-{int(time.time())}"
    started = time.monotonic()
    result = search(
        MODEL,
        space=SPACE,
        trials=args.trials,
        finetune_steps=args.steps,
        budget=Budget.parse(drop="5%"),
        study=study_name,
        storage=storage,
        latency="predicted",
        early_stop=args.early_stop,
        show_progress=False,
    )
    search_s = time.monotonic() - started
    study = load_study(study_name, storage)
    base = study.user_attrs["baseline"]
    base_probe = base["metrics"]["probe_top1"]
    trials = {t.number: t for t in study.trials}
    rows, meets = [], []
    for c in result.front:
        probe = trials[c["trial"]].user_attrs.get("metrics", {}).get("probe_top1")
        rows.append(_row(c, probe, base))
        speed = base["latency_ms"] / c["measured_ms"]
        size = base["size_bytes"] / c["size_bytes"]
        if (
            speed >= 3
            and size >= 4
            and c["accuracy"] >= 0.95
            and probe is not None
            and probe >= base_probe - 0.02
        ):
            meets.append((speed, size, c, probe))
        print(rows[-1], flush=True)
    plain = _plain_int8(base["latency_ms"])
    best = max(meets, key=lambda m: (m[0], m[1]), default=None)
    verdict = "no front candidate meets the bar"
    if best is not None:
        speed, size, c, probe = best
        verdict = (
            f"trial {c['trial']} meets the bar: {speed:.2f}x faster (measured), {size:.2f}x "
            f"smaller, cosine {c['accuracy']:.4f}, probe {100 * probe:.1f} vs fp32 "
            f"{100 * base_probe:.1f} ({100 * (probe - base_probe):+.1f} points)"
        )
    cpu = CpuTarget().fingerprint()["cpu_model"]
    failed = result.trials_failed
    no_early_stop = "" if args.early_stop else " --no-early-stop"
    stopped = sum(1 for t in study.trials if t.user_attrs.get("stop_reason"))
    text = "\n".join(
        [
            f"# minilm: {args.trials}-trial search, predicted latency ({datetime.date.today()})",
            "",
            f"`python bench/minilm.py --trials {args.trials} --steps {args.steps} --plans "
            f"{args.plans}{no_early_stop}` on {cpu}, torch {torch.__version__}, 1 thread, "
            "batch 1, 128 tokens, "
            f"space `{SPACE}`, budget cosine >= 0.95 (`--max-drop 5%`), {args.steps} "
            "distillation steps per trial.",
            "",
            f"- profile (latency predictor; {prof.kernels} kernel sizes, {prof.plans} whole "
            f"plans): {prof.seconds / 60:.1f} min when built "
            f"({profile_s / 60:.1f} min in this run)",
            f"- search ({result.trials_run} trials, {failed} failed, {stopped} stopped early, "
            "front verified): "
            f"**{search_s / 60:.1f} min**",
            f"- fp32: {base['latency_ms']:.1f} ms, {base['size_bytes'] / 1e6:.1f} MB, probe "
            f"{100 * base_probe:.1f}%",
            f"- verdict: {verdict}",
            "",
            "Measured latency: the verify step's median of paired per-round ratios to fp32 "
            "(interleaved) times fp32's median. Size: counted bytes of the compact artifact.",
            "",
            "| trial | cosine | probe % | predicted ms | measured ms | speed-up | MB | smaller |",
            "|---|---|---|---|---|---|---|---|",
            f"| fp32 | 1.0000 | {100 * base_probe:.1f} | - | {base['latency_ms']:.1f} | 1.00x | "
            f"{base['size_bytes'] / 1e6:.1f} | 1.00x |",
            plain,
            *rows,
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
