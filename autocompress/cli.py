"""The command line: the parser, the search command, and dispatch (the other commands are in
`commands.py`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from autocompress.commands import (
    _cmd_export,
    _cmd_models,
    _cmd_profile,
    _cmd_report,
    _cmd_sensitivity,
    _cmd_show,
    _cmd_targets,
    _console,
)
from autocompress.config import (
    DEFAULT_FINETUNE_STEPS,
    DEFAULT_POLISH,
    DEFAULT_TARGET,
    POLISH_STEPS_FACTOR,
)
from autocompress.errors import AutocompressError
from autocompress.optimize.heartbeat import DEFAULT_HEARTBEAT_S

EPILOG = "Run 'autocompress search' with no arguments for a demo search on the built-in ResNet."


def _cmd_search(args: argparse.Namespace) -> int:
    from autocompress.api import search
    from autocompress.config import Budget
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
            methods=None if args.methods is None else args.methods.split(","),
            trials=args.trials,
            timeout_s=args.timeout,
            sampler=args.sampler,
            finetune_steps=args.finetune_steps,
            seed=args.seed,
            study=args.study,
            storage=args.storage,
            batch_size=args.batch_size,
            train_threads=args.train_threads,
            latency=args.latency,
            show_progress=not args.quiet,
            workers=args.workers,
            heartbeat_s=args.heartbeat or None,
            alternatives=not args.no_alternatives,
            early_stop=args.early_stop,
            warm_start=not args.no_warm_start,
            allocate=not args.no_allocation,
            polish=args.polish,
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
        f"{result.trials_run} trials this run, {result.trials_failed} failed"
        + (f", {result.trials_stopped} stopped early" if result.trials_stopped else "")
        + ")"
    )
    console.print(
        front_table(result.baseline, result.front, title=title, alternatives=result.alternatives)
    )
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
    defaults = vars(_parser().parse_args(["search"]))
    skip = {"command", "run", "model", "study", "trials", "timeout", "quiet"}
    for flag, value in vars(args).items():
        if flag in skip or value == defaults.get(flag):
            continue
        option = f"--{flag.replace('_', '-')}"
        words += [option] if value is True else [option, str(value)]
    return shlex.join([*words, "--trials", "N"])


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr, exit code 2 (no usage block;
    the line says where the usage is)."""

    def error(self, message: str) -> NoReturn:
        print(f"autocompress: error: {message}; see '{self.prog} --help'", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autocompress",
        description="Hardware-aware compression search for PyTorch models.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="list the built-in model zoo")
    models.set_defaults(run=_cmd_models)

    targets = sub.add_parser(
        "targets", help="list the targets (device:runtime) and which work here"
    )
    targets.set_defaults(run=_cmd_targets)

    s = sub.add_parser("search", help="search compression plans; prints the Pareto front")
    s.add_argument("--model", default="digits-resnet", help="zoo name or pkg.mod:factory")
    s.add_argument(
        "--task", default=None, help="zoo task name or pkg.mod:factory (zoo models bring theirs)"
    )
    s.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"device and runtime latency is measured on: {DEFAULT_TARGET} (default), "
        "cpu:openvino, cpu (PyTorch eager), cuda, cuda:onnxruntime; see 'autocompress targets'",
    )
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
    s.add_argument(
        "--space",
        default=None,
        help="search-space YAML file or packaged name (default: the target's: runtime on "
        "ONNX Runtime and OpenVINO, default in PyTorch eager)",
    )
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
        "--latency",
        choices=("predicted", "measured"),
        default="predicted",
        help="score trials with the profiled predictor (default; profiles on first use) or "
        "measure every trial; the front is measured after the search either way",
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
    s.add_argument(
        "--no-alternatives",
        action="store_true",
        help="do not time the plain alternatives (the dense model in ONNX Runtime fp32 and "
        "int8, ~20 s per study); speed-ups are then stated against the dense model only",
    )
    s.add_argument(
        "--early-stop",
        action="store_true",
        help="stop a trial's fine-tune a quarter of the way in when even its best hope is "
        "dominated by a finished trial (or below the --max-drop floor); such trials are pruned",
    )
    s.add_argument(
        "--no-warm-start",
        action="store_true",
        help="do not start a new study with the space's uniform plans (each method alone at "
        "each level) or the allocated ones; every trial is the sampler's",
    )
    s.add_argument(
        "--no-allocation",
        action="store_true",
        help="do not start a new study with per-layer plans allocated from the model's "
        "measured sensitivity, nor refine the fastest plan that holds accuracy (the uniform "
        "plans still run; the sampler has the other trials)",
    )
    s.add_argument(
        "--polish",
        type=int,
        default=DEFAULT_POLISH,
        metavar="N",
        help=f"the last N trials (at most a third of --trials) fine-tune the fastest plans "
        f"that came near the accuracy floor for {POLISH_STEPS_FACTOR}x the steps (default: "
        f"{DEFAULT_POLISH}; 0: none)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=_cmd_search)

    p = sub.add_parser(
        "profile",
        help="profile a model's latency on a target (cached); --check N tests the predictor",
    )
    p.add_argument("--model", default="digits-resnet", help="zoo name or pkg.mod:factory")
    p.add_argument("--task", default=None, help="zoo task name or pkg.mod:factory")
    p.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"see 'autocompress targets' (default: {DEFAULT_TARGET})",
    )
    p.add_argument("--threads", type=int, default=1, help="threads when timing (default: 1)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--space",
        default=None,
        help="search space the predictor must cover (default: the target's)",
    )
    p.add_argument("--methods", default=None, help="comma list of prune,quant,lowrank,sparse")
    p.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="build and measure N fresh random plans and print the predictor's accuracy",
    )
    p.add_argument("--refresh", action="store_true", help="profile again even if cached")
    p.add_argument(
        "--plans",
        type=int,
        default=None,
        help="random plans timed whole for calibration (default: 40, 30 without bit-widths, "
        "as many as fit in 9 minutes with at least 12)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_profile)

    sens = sub.add_parser(
        "sensitivity",
        help="what each level of each knob costs the metric alone (cached; no fine-tune)",
    )
    sens.add_argument("--model", default="digits-resnet", help="zoo name or pkg.mod:factory")
    sens.add_argument("--task", default=None, help="zoo task name or pkg.mod:factory")
    sens.add_argument(
        "--space",
        default=None,
        help=f"search space whose levels are measured (default: {DEFAULT_TARGET}'s)",
    )
    sens.add_argument("--methods", default=None, help="comma list of prune,quant,lowrank,sparse")
    sens.add_argument(
        "--batches", type=int, default=8, help="training batches the metric runs on (default: 8)"
    )
    sens.add_argument("--top", type=int, default=15, help="rows to print, costliest first")
    sens.add_argument("--json", action="store_true", help="print every row as JSON")
    sens.add_argument("--refresh", action="store_true", help="measure again even if cached")
    sens.add_argument("--quiet", action="store_true", help="no progress bar")
    sens.set_defaults(run=_cmd_sensitivity)

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

    exp = sub.add_parser(
        "export", help="write one candidate as a deployable, verified model (model.pt2, ...)"
    )
    exp.add_argument("--study", required=True)
    exp.add_argument("--storage", default=None)
    exp.add_argument("--trial", type=int, default=None, help="the trial number to export")
    exp.add_argument(
        "--pick",
        default=None,
        help="fastest, smallest or most-accurate among the candidates within the budgets",
    )
    exp.add_argument("--out", required=True, help="a new folder for the artifact")
    exp.add_argument("--model", default=None, help="pkg.mod:factory, for a model outside the zoo")
    exp.add_argument("--task", default=None, help="pkg.mod:factory, for a task outside the zoo")
    exp.add_argument(
        "--train-threads",
        type=int,
        default=None,
        help="threads for the replayed fine-tune (default: the trial's own, which replays it "
        "exactly)",
    )
    exp.set_defaults(run=_cmd_export)
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
