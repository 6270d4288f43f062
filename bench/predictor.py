"""The latency predictor's accuracy on fresh plans, per zoo model, and the verify step's verdict.

What it measures, for each model and search space asked for:
- profile: `autocompress profile` from scratch (`refresh`): wall time, kernel sizes timed and
  whole plans timed for calibration (1 thread, batch 1);
- check: N random plans from the space drawn with another seed than the profile's (none used
  in fitting), each predicted, then built and measured interleaved with the dense model:
  fraction within +-10% of measured, mean absolute percentage error, Spearman rank
  correlation, and the slowest single prediction.

Usage: python bench/predictor.py [--models NAME ...] [--space default] [--plans 100]
       [--out reports/benchmarks/predictor.md] [--dump checks.json]
Writes the table to --out (one section per space, replaced on a re-run) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from autocompress.hardware.targets import CpuTarget
from autocompress.optimize.latency import profile

MODELS = ("digits-cnn", "digits-resnet", "mnist1d-cnn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--space", default="default")
    parser.add_argument("--plans", type=int, default=100, help="fresh plans per model")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/predictor.md"))
    parser.add_argument(
        "--dump", type=Path, help="also write each plan's predicted and measured ratio (JSON)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    rows, dumped = [], {}
    for model in args.models:
        started = time.monotonic()
        result = profile(
            model, space=args.space, check=args.plans, refresh=True, show_progress=False
        )
        check = result.check
        assert check is not None
        rows.append(
            f"| {model} | {result.kernels} | {result.plans} | {result.seconds / 60:.1f} | "
            f"{len(check.measured)} | {check.within():.2f} | {check.mape():.3f} | "
            f"{check.spearman():.2f} | {check.predict_ms:.2f} | "
            f"{(time.monotonic() - started) / 60:.1f} |"
        )
        print(rows[-1], flush=True)
        dumped[model] = {"predicted": check.predicted, "measured": check.measured}
        if args.dump is not None:
            args.dump.write_text(json.dumps(dumped, indent=1))

    cpu = CpuTarget().fingerprint()["cpu_model"]
    lines = [
        f"## Latency predictor, space `{args.space}` ({datetime.date.today()})",
        "",
        f"`python bench/predictor.py --space {args.space} --plans {args.plans}"
        + f"` on {cpu}, torch {torch.__version__}, 1 thread, batch 1. Fresh plans: drawn with",
        "another seed than the profile's; each predicted, then built and measured interleaved",
        "with the dense model (ratio to dense). within10: fraction within +-10% of measured.",
        "",
        "| model | kernel sizes | calibration plans | profile min | plans checked | within10 "
        "| MAPE | Spearman | slowest predict ms | model total min |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One section per space: a new run replaces that space's section and keeps the others.
    head = "# Latency predictor benchmarks\n"
    sections = args.out.read_text().split("\n## ")[1:] if args.out.exists() else []
    kept = [s for s in sections if not s.startswith(f"Latency predictor, space `{args.space}`")]
    args.out.write_text("\n## ".join([head, *kept]) + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
