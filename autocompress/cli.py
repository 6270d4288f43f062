"""The command line: a thin table of commands, each a call into the public API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from autocompress.config import DEFAULT_FINETUNE_STEPS
from autocompress.errors import AutocompressError
from autocompress.optimize.heartbeat import DEFAULT_HEARTBEAT_S


def _console():
    """stdout console; piped output gets 120 columns instead of rich's 80 so tables don't wrap."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


EPILOG = "Run 'autocompress search' with no arguments for a demo search on the built-in ResNet."


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


def _cmd_search(args: argparse.Namespace) -> int:
    from autocompress.config import Budget
    from autocompress.optimize.run import search
    from autocompress.report.table import front_table

    budget = None
    if args.budget or args.max_size or args.max_drop:
        budget = Budget.parse(latency=args.budget, size=args.max_size, drop=args.max_drop)
    try:
        result = search(
            args.model,
            task=args.task,
            target=args.target,
            threads=args.threads,
            budget=budget,
            space=args.space,
            methods=args.methods.split(",") if args.methods else None,
            trials=args.trials,
            timeout_s=args.timeout,
            sampler=args.sampler,
            finetune_steps=args.finetune_steps,
            seed=args.seed,
            study=args.study,
            storage=args.storage,
            batch_size=args.batch_size,
            train_threads=args.train_threads,
            show_progress=not args.quiet,
            workers=args.workers,
            heartbeat_s=args.heartbeat or None,
        )
    except KeyboardInterrupt:
        print(
            "\ninterrupted; running trials are recorded as failed. Resume with: "
            + _resume_command(args),
            file=sys.stderr,
        )
        return 130
    console = _console()
    title = (
        f"Pareto front of study {result.study} ({result.budget.describe()}; "
        f"{result.trials_run} trials this run, {result.trials_failed} failed)"
    )
    console.print(front_table(result.baseline, result.front, title=title))
    console.print(f"show it again: autocompress show --study {result.study}", highlight=False)
    if result.report is not None:
        console.print(f"report: {result.report}", highlight=False)
    return 0


def _resume_command(args: argparse.Namespace) -> str:
    """The search command that continues this run's study (same model, task, storage, budgets)."""
    import shlex

    from autocompress.resolve import model_label

    study = args.study or f"{model_label(args.model)}-{args.target}"
    words = ["autocompress", "search", "--model", args.model, "--study", study]
    for flag in ("task", "storage", "space", "budget", "max_size", "max_drop", "workers"):
        value = getattr(args, flag)
        if value not in (None, 1, "default"):
            words += [f"--{flag.replace('_', '-')}", str(value)]
    return shlex.join([*words, "--trials", "N"])


def _cmd_show(args: argparse.Namespace) -> int:
    from autocompress.optimize.failures import describe_failures, failed_trials
    from autocompress.optimize.pareto import baseline_row, pareto_front
    from autocompress.optimize.study import load_study
    from autocompress.report.table import front_table

    study = load_study(args.study, args.storage)
    front = pareto_front(study)
    failures = describe_failures(failed_trials(study))
    if args.json:  # stdout stays the candidate list; failures go to stderr
        print(json.dumps(front, indent=2))
        for line in failures:
            print(line, file=sys.stderr)
        return 0
    baseline = baseline_row(study)
    if baseline is None:
        print(f"study {args.study!r} has no finished trial yet", file=sys.stderr)
    else:
        title = f"Pareto front of study {args.study}"
        _console().print(front_table(baseline, front, title=title))
    for line in failures:
        print(line)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from autocompress.optimize.study import load_study
    from autocompress.report.html import write_report

    study = load_study(args.study, args.storage)
    path = write_report(study, args.out, storage_url=args.storage)
    print(f"report: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="Hardware-aware compression search for PyTorch models.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="list the built-in model zoo")
    models.set_defaults(run=_cmd_models)

    s = sub.add_parser("search", help="search compression plans; prints the Pareto front")
    s.add_argument("--model", default="digits-resnet", help="zoo name or pkg.mod:factory")
    s.add_argument(
        "--task", default=None, help="zoo task name or pkg.mod:factory (zoo models bring theirs)"
    )
    s.add_argument("--target", default="cpu", help="where latency is measured (default: cpu)")
    s.add_argument("--threads", type=int, default=1, help="threads when timing (default: 1)")
    s.add_argument("--batch-size", type=int, default=1, help="batch size latency is measured at")
    s.add_argument(
        "--train-threads",
        type=int,
        default=None,
        help="threads for fine-tuning (default: all cores while the machine is quiet, else 1)",
    )
    s.add_argument("--budget", help="latency budget, e.g. 2ms (default: half the dense latency)")
    s.add_argument("--max-size", help="size budget, e.g. 50kB or 5MB")
    s.add_argument("--max-drop", help="accuracy drop allowed vs the dense model, e.g. 1%%")
    s.add_argument("--space", default="default", help="search-space YAML file or packaged name")
    s.add_argument(
        "--methods", default=None, help="comma list of prune,quant,lowrank,sparse (default: all)"
    )
    s.add_argument("--trials", type=int, default=30, help="trials to run now (default: 30)")
    s.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after N seconds"
    )
    s.add_argument("--sampler", default="nsga2", help="nsga2 (default), tpe or random")
    s.add_argument(
        "--finetune-steps",
        type=int,
        default=DEFAULT_FINETUNE_STEPS,
        help=f"distillation steps per trial (default {DEFAULT_FINETUNE_STEPS})",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--study", default=None, help="study name (default: <model>-<target>)")
    s.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: sqlite:///reports/autocompress.db)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local processes filling the study together; --trials is their total (default: 1)",
    )
    s.add_argument(
        "--heartbeat",
        type=int,
        default=DEFAULT_HEARTBEAT_S,
        metavar="SECONDS",
        help=f"a running trial's heartbeat interval; one silent for twice as long is failed "
        f"and retried (default: {DEFAULT_HEARTBEAT_S}; 0: off)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=_cmd_search)

    show = sub.add_parser("show", help="print a study's Pareto front")
    show.add_argument("--study", required=True)
    show.add_argument("--storage", default=None)
    show.add_argument("--json", action="store_true", help="print the front as JSON")
    show.set_defaults(run=_cmd_show)

    report = sub.add_parser("report", help="write a study's report: one self-contained HTML page")
    report.add_argument("--study", required=True)
    report.add_argument("--storage", default=None)
    report.add_argument("--out", default=None, help="folder (default: reports/<study>/)")
    report.set_defaults(run=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal error."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except AutocompressError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
