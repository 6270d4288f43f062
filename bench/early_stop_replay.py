"""Early-stopping rules replayed on real fine-tunes: the evidence behind optimize/early_stop.py.

What it measures. `--record`: for each model, the default space's uniform warm starts and then
random plans (sampler seed 1), each applied and fine-tuned for 60 steps as a search trial is
(same data order, 1 thread), scored with `early_stop.score_midway` at steps 10, 15, 20, 30, 40
and at the end; with each plan's predicted latency ratio (the cached full-space profile), size,
and the time of a training step, of one midway score and of `apply`. Written to --data.

Replay (always): the trials are taken in order as a search would finish them, and each rule
variant (rung steps, gain quantile, whether a rung is skipped when nothing could dominate the
trial, the `--max-drop` floor) decides at its rungs from the trials it let finish before.
Per variant: trials stopped, trial time saved (apply + steps + scores, against every trial
fine-tuned to the end and scored once; optuna's and the predictor's time left out), and the
hypervolume lost (`report.data.hypervolume_gain`, floor dense - 0.10) of the finished
trials against all of them. The replay has no sampler, so the difference is the rule alone.

Usage: python bench/early_stop_replay.py [--record] [--models NAME ...] [--plans 26]
       [--data reports/benchmarks/early_stop_trajectories.json]
       [--out reports/benchmarks/early_stop_replay.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

MODELS = ("digits-resnet", "mnist1d-cnn")
PROBES = (10, 15, 20, 30, 40)
STEPS = 60
FLOOR_DROP = 0.10
HERE = Path(__file__).resolve().parent.parent / "reports" / "benchmarks"
VARIANTS = [  # (rungs, quantile, skip, floor)
    *[((r,), q, True, False) for r in (10, 15, 20) for q in (1.0, 0.9, 0.85, 0.75)],
    *[(rungs, 0.85, True, False) for rungs in ((10, 20), (15, 30), (20, 40))],
    ((20, 40), 1.0, False, False),
    *[((15,), q, False, False) for q in (1.0, 0.85)],
    *[((15,), q, False, True) for q in (1.0, 0.85)],
]


def record(model: str, plans: int) -> dict[str, Any]:
    """Fine-tune `plans` plans of the default space, scoring them at PROBES steps."""
    import optuna

    from autocompress.compress.apply import apply, bake
    from autocompress.compress.size import compressed_size_bytes, size_bytes
    from autocompress.evaluate.finetune import finetune
    from autocompress.hardware.targets import resolve_target
    from autocompress.latency.profiles import predictor_for
    from autocompress.optimize.early_stop import score_midway
    from autocompress.optimize.latency import batch_inputs
    from autocompress.optimize.objectives import fixed_data_order
    from autocompress.space.discover import discover
    from autocompress.space.sample import plan_from_trial
    from autocompress.space.spec import load_space
    from autocompress.space.uniform import uniform_plans
    from autocompress.zoo import load_model, load_task

    task = load_task(model)
    dense = load_model(model, task=task).eval()
    space = load_space("default")
    layers = discover(dense, task.inputs())
    knobs = space.knobs(layers, model=dense)
    predictor, _ = predictor_for(
        dense, task, resolve_target("cpu", threads=1), model=model, layers=layers, knobs=knobs,
        round_to=space.round_to, inputs=batch_inputs(task, 1), show_progress=False,
    )  # fmt: skip
    sampler = optuna.samplers.RandomSampler(seed=1)
    study = optuna.create_study(directions=["maximize"], sampler=sampler)
    for params in uniform_plans(knobs):
        study.enqueue_trial(params)
    out: dict[str, Any] = {
        "dense": {"accuracy": task.metric(dense, task.val), "size_bytes": size_bytes(dense)},
        "trials": [],
    }
    for i in range(plans):
        trial = study.ask()
        plan = plan_from_trial(trial, knobs, round_to=space.round_to)
        study.tell(trial, 0.0)
        started = time.perf_counter()
        candidate = apply(dense, plan, task.inputs())
        apply_s = time.perf_counter() - started
        size = compressed_size_bytes(bake(candidate), plan)
        scores: dict[int, float] = {}
        score_s: list[float] = []

        def on_step(step: int, loss: float, model=candidate, scores=scores, spent=score_s) -> None:
            if step in PROBES:
                t = time.perf_counter()
                scores[step] = score_midway(model, task)
                spent.append(time.perf_counter() - t)

        with fixed_data_order(task):
            started = time.perf_counter()
            finetune(candidate, dense, task, steps=STEPS, on_step=on_step)
            train_s = time.perf_counter() - started
            final = task.metric(candidate, task.val)
        row = {
            "plan": i,
            "ratio": predictor.predict_ratio(plan),
            "size": size,
            "scores": scores,
            "final": final,
            "step_s": (train_s - sum(score_s)) / STEPS,
            "probe_s": sum(score_s) / len(score_s),
            "apply_s": apply_s,
        }
        out["trials"].append(row)
        print(f"  {model} plan {i}: final {final:.3f}, latency x{row['ratio']:.2f}", flush=True)
    return out


def replay(data: dict[str, Any], rungs, quantile: float, skip: bool, use_floor: bool):
    """Stopped, time saved and hypervolume lost for one rule variant on one model's trials."""
    from autocompress.optimize.early_stop import MARGIN, WARMUP_RECORDS
    from autocompress.optimize.pareto import dominates
    from autocompress.report.data import hypervolume, hypervolume_gain

    dense, dense_size = data["dense"]["accuracy"], data["dense"]["size_bytes"]
    floor = dense - FLOOR_DROP
    done: list[dict[str, Any]] = []
    stopped: set[int] = set()
    base_s = rule_s = 0.0
    for t in data["trials"]:
        scores = {int(k): v for k, v in t["scores"].items()}
        full = t["apply_s"] + STEPS * t["step_s"] + t["probe_s"]  # the final score ~ one probe
        base_s += full
        me = (t["ratio"], t["size"] / dense_size)
        stop_at, probes, scored = None, 0, {}
        for r in rungs:
            evidence = [d for d in done if r in d["scores"]]
            rivals = [d for d in done if d["feasible"] and d["lat"] <= me[0] and d["size"] <= me[1]]
            if skip and not use_floor and len(evidence) >= WARMUP_RECORDS and not rivals:
                continue
            probes += 1
            scored[r] = scores[r]
            if len(evidence) < WARMUP_RECORDS:
                continue
            gains = sorted(d["final"] - d["scores"][r] for d in evidence)
            hope = scores[r] + max(0.0, gains[round(quantile * (len(gains) - 1))]) + MARGIN
            if (use_floor and hope < floor) or any(
                dominates((d["final"], d["lat"], d["size"]), (hope, *me)) for d in rivals
            ):
                stop_at = r
                break
        if stop_at is None:
            rule_s += full + probes * t["probe_s"]
            done.append(
                {"scores": scored, "final": t["final"], "lat": me[0], "size": me[1],
                 "feasible": t["final"] >= floor}
            )  # fmt: skip
        else:
            rule_s += t["apply_s"] + stop_at * t["step_s"] + probes * t["probe_s"]
            stopped.add(t["plan"])

    def volume(trials: list[dict[str, Any]]) -> float:
        gains = [
            hypervolume_gain(
                x["final"], x["ratio"], x["size"] / dense_size, dense_accuracy=dense, floor=floor
            )
            for x in trials
        ]
        return hypervolume(gains)

    everything = volume(data["trials"])
    kept = volume([t for t in data["trials"] if t["plan"] not in stopped])
    lost = (1 - kept / everything) if everything else 0.0
    return len(stopped), 1 - rule_s / base_s, 0.0 if abs(lost) < 1e-9 else lost


def table(data: dict[str, dict[str, Any]]) -> str:
    models = list(data)
    head = " | ".join(f"{m}: stopped, saved, HV lost" for m in models)
    lines = [
        f"| rungs (of {STEPS}) | gain quantile | skip unrivalled | floor | {head} |",
        "|---|---:|---|---|" + "---|" * len(models),
    ]
    for rungs, quantile, skip, use_floor in VARIANTS:
        cells = []
        for m in models:
            n, saved, lost = replay(data[m], rungs, quantile, skip, use_floor)
            cells.append(f"{n}/{len(data[m]['trials'])}, {saved:.1%}, {lost:.2%}")
        lines.append(
            f"| {', '.join(map(str, rungs))} | {quantile:g} | {'yes' if skip else 'no'} | "
            f"{'yes' if use_floor else 'no'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--record", action="store_true", help="fine-tune and record first")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--plans", type=int, default=26)
    parser.add_argument("--data", type=Path, default=HERE / "early_stop_trajectories.json")
    parser.add_argument("--out", type=Path, default=HERE / "early_stop_replay.md")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    if args.record:
        recorded = json.loads(args.data.read_text()) if args.data.exists() else {}
        for model in args.models:
            recorded[model] = record(model, args.plans)
            recorded["_note"] = f"recorded by --record on {datetime.date.today()}"
            args.data.write_text(json.dumps(recorded, indent=1))
    data = json.loads(args.data.read_text())
    note = data.get("_note", "")
    data = {m: data[m] for m in args.models if m in data}
    probe = {
        m: sum(t["probe_s"] / t["step_s"] for t in d["trials"]) / len(d["trials"])
        for m, d in data.items()
    }
    command = " ".join(
        ["python bench/early_stop_replay.py", *(sys.argv[1:] if argv is None else argv)]
    )
    costs = ", ".join(f"{m} {v:.1f}" for m, v in probe.items())
    text = "\n".join(
        [
            "# Early-stopping rules replayed on recorded fine-tunes",
            "",
            f"- command: `{command}`",
            f"- date: {datetime.date.today()}; torch {torch.__version__}; trajectories: "
            f"`{args.data.name}` ({note})",
            f"- one midway score costs {costs} training steps (BatchNorm recalibration and the "
            "validation pass)",
            f"- latency: predicted; hypervolume floor: dense - {FLOOR_DROP:g}",
            "",
            "Trials replayed in order; saved: share of their fine-tune and scoring time; HV lost:",
            "hypervolume of the trials let finish vs all. *skip unrivalled*: a rung is not scored",
            "when no finished feasible trial is as fast and as small (nothing could dominate it);",
            "*floor*: `--max-drop` set to the floor, so every rung is scored. Skipping also",
            "changes the evidence: the gains are then learned from the trials a rung can judge",
            "(those with a faster, smaller rival), less from the most compressed plans, which",
            "recover most.",
            "",
            table(data),
            "",
        ]
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
