"""The commands that read and report (models, targets, show, report, sensitivity, profile,
export): each a call into the public API and what it prints. `cli.py` parses and dispatches."""

from __future__ import annotations

import argparse
import json
import sys


def _console():
    """stdout console; piped output gets 120 columns instead of rich's 80 so tables don't wrap."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from autocompress.zoo import ZOO

    table = Table(title="autocompress zoo (trained on first use, then cached)")
    for column in ("name", "description"):
        table.add_column(column)
    for name in ZOO.names():
        table.add_row(name, ZOO.get(name).description)
    _console().print(table)
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from autocompress.errors import UserInputError
    from autocompress.hardware.targets import TARGETS

    table = Table(title="autocompress targets (--target NAME)")
    for column in ("name", "runtime", "installed", "what"):
        table.add_column(column)
    for name in TARGETS.names():
        cls = TARGETS.get(name)
        try:
            cls(threads=1)
            status = "yes"
        except UserInputError as exc:
            status = f"no: {exc}"
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        table.add_row(name, cls.runtime, status, summary)
    _console().print(table)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from autocompress.optimize.early_stop import describe_stopped
    from autocompress.optimize.failures import describe_failures, failed_trials
    from autocompress.optimize.pareto import alternatives, baseline_row, pareto_front
    from autocompress.optimize.record import read
    from autocompress.optimize.study import load_study
    from autocompress.report.table import front_table

    study = load_study(args.study, args.storage)
    record = read(study)
    front = pareto_front(study, record)
    failures = describe_failures(failed_trials(study)) + describe_stopped(study)
    failures += [
        f"#{c['trial']} is on the front but could not be built to measure it: {c['verify_error']}"
        for c in front
        if c["verify_error"]
    ]
    failures += [_not_applied_line(c) for c in front if c["not_applied"]]
    if args.json:  # stdout stays the candidate list; failures go to stderr
        print(json.dumps(front, indent=2))
        for line in failures:
            print(line, file=sys.stderr)
        return 0
    baseline = baseline_row(study, record)
    if baseline is None:
        print(f"study {args.study!r} has no finished trial yet", file=sys.stderr)
    else:
        title = f"Pareto front of study {args.study}"
        table = front_table(baseline, front, title=title, alternatives=alternatives(study, record))
        _console().print(table)
    for line in failures:
        print(line)
    return 0


def _not_applied_line(c: dict) -> str:
    """One line on what a front candidate's plan could not apply (those layers stayed as is)."""
    notes = c["not_applied"]
    more = f" (and {len(notes) - 1} more)" if len(notes) > 1 else ""
    return f"#{c['trial']} applied its plan except: {notes[0]}{more}"


def _cmd_report(args: argparse.Namespace) -> int:
    from autocompress.optimize.study import load_study
    from autocompress.report.html import write_report

    study = load_study(args.study, args.storage)
    path = write_report(study, args.out, storage_url=args.storage)
    print(f"report: {path}")
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from rich.table import Table

    from autocompress.optimize.sensitivity import sensitivity

    result, path = sensitivity(
        args.model,
        task=args.task,
        space=args.space,
        methods=None if args.methods is None else args.methods.split(","),
        batches=args.batches,
        refresh=args.refresh,
        show_progress=not args.quiet,
    )
    if args.json:
        print(result.to_json())
        return 0
    rows = sorted(result.rows, key=lambda r: r["drop"], reverse=True)
    title = (
        f"sensitivity of {args.model}: {result.metric_name} {result.dense:.4f} dense on "
        f"{result.batches} training batches; {len(rows)} single changes, "
        f"{result.seconds:.0f} s to measure"
    )
    table = Table(title=title)
    for column in ("knob", "level", "layers", result.metric_name, "drop"):
        table.add_column(column, justify="left" if column in ("knob", "layers") else "right")
    for row in rows[: max(args.top, 0)]:
        layers = row["layers"]
        shown = layers[0] + (f" +{len(layers) - 1}" if len(layers) > 1 else "")
        table.add_row(
            row["setting"], str(row["value"]), shown, f"{row['metric']:.4f}", f"{row['drop']:+.4f}"
        )
    _console().print(table)
    print(f"sensitivity: {path}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from autocompress.optimize.latency import profile

    result = profile(
        args.model,
        task=args.task,
        target=args.target,
        threads=args.threads,
        batch_size=args.batch_size,
        space=args.space,
        methods=None if args.methods is None else args.methods.split(","),
        check=args.check,
        refresh=args.refresh,
        plans=args.plans,
        show_progress=not args.quiet,
    )
    print(
        f"profile: {result.path} ({result.kernels} kernel sizes, {result.plans} whole plans, "
        f"profiled in {result.seconds:.0f} s)"
    )
    if result.check is not None:
        print(f"slowest prediction: {result.check.predict_ms:.2f} ms")
        print(result.check.line())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from autocompress.export import export

    result = export(
        args.study,
        out=args.out,
        trial=args.trial,
        pick=args.pick,
        storage=args.storage,
        model=args.model,
        task=args.task,
        train_threads=args.train_threads,
    )
    m = result.metrics
    name = m["metric_name"]
    print(f"exported trial {result.trial} of study {m['study']} to {result.out}")
    print(
        f"  {name} {m['accuracy']:.4f} (study {m['study_accuracy']:.4f}), "
        f"latency {m['latency_ms']:.3f} ms measured now (study {m['study_latency_ms']:.3f} ms "
        f"{m['study_latency_source']}), "
        f"model.pt2 {m['artifact_bytes']} bytes (size_bytes {m['size_bytes']})"
    )
    runtime = m.get("runtime")
    if runtime is not None:
        print(
            f"  {runtime['file']} checked in {runtime['runtime']}: "
            f"{name} {runtime['accuracy']:.4f}, {runtime['latency_ms']:.3f} ms "
            f"({runtime['latency_vs_in_memory_ratio']:.2f}x the graph the search timed; "
            f"{runtime['int8_nodes']} int8 layer nodes)"
        )
    onnx = m["onnx"]
    if onnx["written"]:
        agreement = onnx["top1_agreement"]
        said = "" if agreement is None else f": top-1 agrees with PyTorch on {agreement:.2%}"
        print(f"  model.onnx checked in ONNX Runtime{said}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  files: {', '.join(result.files)}")
    return 0
