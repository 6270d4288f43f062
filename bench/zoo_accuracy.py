"""fp32 accuracy of the zoo's pretrained-and-fine-tuned models on their full held-out sets.

What it measures (no timing of the models: latency figures are other benches' work):
- effnet-fmnist: top-1 on all 10k Fashion-MNIST test images (the search validates on a fixed
  2000 of them), and the wall time of one pass over the search's validation split;
- minilm-sentiment: top-1 on the 2000 held-out tweets (its validation split), the share of
  the larger class beside it (what always answering "negative" scores), and a validation pass;
- for each: parameters, and the wall and CPU time of training it once when this run trained it
  (the cache is used otherwise: delete it, or point AUTOCOMPRESS_CACHE_DIR at an empty folder).

Usage: python bench/zoo_accuracy.py [--models effnet-fmnist,minilm-sentiment]
       [--out reports/benchmarks/zoo_accuracy.md]
"""

from __future__ import annotations

import argparse
import datetime
import resource
import time
from pathlib import Path

import torch


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str) -> dict[str, object]:
    """Train (or load) one zoo model and measure it on its held-out data."""
    from autocompress.zoo import ZOO, load_model, load_task
    from autocompress.zoo._cache import weights_path

    entry = ZOO.get(name)
    task = load_task(name)
    trained_here = not weights_path(entry.name, entry.version).exists()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    model = load_model(name, task=task)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    start = time.perf_counter()
    val = task.metric(model, task.val)
    val_seconds = time.perf_counter() - start
    row: dict[str, object] = {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "val_top1": val,
        "val_items": len(task.val.dataset),  # type: ignore[arg-type]
        "val_seconds": val_seconds,
        "train_wall_s": wall if trained_here else None,
        "train_cpu_s": cpu if trained_here else None,
    }
    if name == "effnet-fmnist":
        from autocompress.zoo.effnet import fashion_task

        full = fashion_task(val_images=None)
        row["test_top1"] = task.metric(model, full.val)
        row["test_items"] = len(full.val.dataset)  # type: ignore[arg-type]
    else:
        labels = torch.cat([y for _, y in task.val])
        row["test_top1"] = val
        row["test_items"] = len(labels)
        row["majority"] = float(torch.bincount(labels).max()) / len(labels)
    return row


def _table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | params | fp32 top-1, full held-out set | search's val split: top-1, one pass "
        "| trained once: wall / CPU |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        extra = f" (majority class {100 * r['majority']:.1f}%)" if "majority" in r else ""
        trained = (
            "cached (not trained in this run)"
            if r["train_wall_s"] is None
            else f"{r['train_wall_s'] / 60:.1f} min / {r['train_cpu_s'] / 60:.1f} CPU-min"
        )
        lines.append(
            f"| `{r['name']}` | {r['params'] / 1e6:.2f}M "
            f"| {100 * r['test_top1']:.2f}% of {r['test_items']}{extra} "
            f"| {100 * r['val_top1']:.2f}% of {r['val_items']}, {r['val_seconds']:.1f} s "
            f"| {trained} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet-fmnist,minilm-sentiment")
    parser.add_argument("--out", default="reports/benchmarks/zoo_accuracy.md")
    args = parser.parse_args()
    rows = [measure(name) for name in args.models.split(",")]
    text = (
        "# Zoo models: fp32 accuracy on held-out data\n\n"
        f"Written by `bench/zoo_accuracy.py` on {datetime.date.today()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. "
        "Training and validation times are taken on whatever else the machine runs: on a "
        "shared, busy one they are upper bounds for an idle run (CPU time too: waiting "
        "threads spin).\n\n" + _table(rows) + "\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
