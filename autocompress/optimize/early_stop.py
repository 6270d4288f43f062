"""Early stopping for a multi-objective search: end a fine-tune whose best hope is dominated.

Optuna's pruners work on one objective only, so the rule is ours ("dominated beyond hope").
A trial's latency and size are known before its fine-tune; only its accuracy is still open.
At rung steps of the fine-tune (`rung_steps`) the accuracy so far is scored with
`task.metric` on the validation split after a short BatchNorm recalibration (`score_midway`).
Completed trials keep their rung scores (user attr `rung_accuracy`), so the study learns how
much a fine-tune still gains after each rung. A running trial stops at a rung when even its
optimistic final accuracy (score so far + a high quantile, `GAIN_QUANTILE`, of the gains
seen from that rung to the end, + `MARGIN`) is dominated by a completed feasible trial, or
is below the accuracy floor of `--max-drop`. Nothing stops before `WARMUP_RECORDS`
completed trials have rung scores. A rung is not scored at all when nothing could stop the
trial there: no floor, and no completed feasible trial as fast and as small as it.

The constants were chosen on replays of real fine-tunes (26 plans per model, the uniform
warm starts then random plans of the default space, 60 steps, scored at steps 10-40):
scoring then cost about 6.8 training steps (it recalibrated BatchNorm on 20 batches before
the validation pass) on digits-resnet and mnist1d-cnn alike, so every rung cost each trial
that goes on ~10%; a second rung never paid for itself; no variant stopped a trial whose
final figures would have added hypervolume (`bench/early_stop_replay.py`,
reports/benchmarks/early_stop_replay.md). Scoring now recalibrates on 5 batches (about 3.5
training steps); the search-quality bench measures the rule as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from autocompress.evaluate.finetune import recalibrate_batchnorm
from autocompress.optimize.pareto import dominates
from autocompress.optimize.record import violations
from autocompress.task import Task

# One rung, at a quarter of the fine-tune: a stop there saves 3/4 of it. Replayed, a rung at
# 1/6, 1/4 or 1/3 saved 24%, 25%, 9% of the trials' time on digits-resnet and 26%, 23%, 20%
# on mnist1d-cnn; 1/4 leaves the steep start of the recovery behind (the gains after it
# vary less) for the saving of 1/6. More fractions add rungs.
RUNG_FRACTIONS = (1 / 4,)
# Completed trials with rung scores needed before anything is stopped (the uniform warm
# starts fill them).
WARMUP_RECORDS = 5
# The quantile (nearest rank) of the gains after a rung that a running trial is granted:
# the largest gain is set by the few worst-damaged plans, which recover most and are seldom
# the ones a rung judges; with it, the replays stopped 3 of 26 digits-resnet plans and
# spent more on scoring than they saved, with 0.85 they stopped 15 and saved 25%.
GAIN_QUANTILE = 0.85
# BatchNorm batches recalibrated before a rung score (the final score takes 20). Scored at
# step 15 of 60 on digits-resnet, keep 0.5 / 0.375 everywhere: 0.967 / 0.791 after 5 batches,
# 0.961 / 0.791 after 20, and 0.733 / 0.524 on the running statistics alone (they lag the
# weights); 5 batches cost half of 20 and a quarter of the whole score.
RUNG_BN_BATCHES = 5
# Added to the optimistic accuracy: a final score's own noise (which BatchNorm batches,
# ties in the metric) is about this size on the zoo's validation splits.
MARGIN = 0.005


def rung_steps(steps: int) -> tuple[int, ...]:
    """The fine-tune steps after which a trial is judged (none for a 1-step fine-tune)."""
    rungs = sorted({max(1, round(f * steps)) for f in RUNG_FRACTIONS})
    return tuple(s for s in rungs if s < steps)


def rung_key(step: int, steps: int) -> str:
    """A rung's name in `rung_accuracy`: "20/60". Trials of other fine-tune lengths never mix."""
    return f"{step}/{steps}"


@dataclass(frozen=True)
class Record:
    """A completed trial as the rule sees it."""

    number: int
    accuracy: float
    latency_ms: float
    size_bytes: float
    feasible: bool
    rungs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What the rule says about a running trial at one rung."""

    stop: bool
    optimistic: float | None  # None while the rule is still warming up
    reason: str


def records_of(study: optuna.Study) -> list[Record]:
    """The study's completed trials, as records (a plan told again counts once)."""
    records = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if "accuracy" not in attrs or "duplicate_of" in attrs:
            continue
        records.append(
            Record(
                number=t.number,
                accuracy=float(attrs["accuracy"]),
                latency_ms=float(attrs["latency_ms"]),
                size_bytes=float(attrs["size_bytes"]),
                feasible=not violations(t),
                rungs=attrs.get("rung_accuracy") or {},
            )
        )
    return records


def judge(
    key: str,
    accuracy: float,
    latency_ms: float,
    size_bytes: float,
    records: Sequence[Record],
    *,
    floor: float | None = None,
    warmup: int = WARMUP_RECORDS,
    quantile: float = GAIN_QUANTILE,
    margin: float = MARGIN,
) -> Verdict:
    """Whether a running trial, scored `accuracy` at rung `key`, is beyond hope.

    Args:
        key: the rung (`rung_key`).
        accuracy: the trial's score at that rung.
        latency_ms: its latency (known before the fine-tune).
        size_bytes: its size.
        records: the study's completed trials (`records_of`).
        floor: the lowest accuracy `--max-drop` allows; None without one.
        warmup: completed trials with a score at this rung needed before anything stops.
        quantile: which of the gains seen after this rung the trial is granted (nearest
            rank; 1 is the largest).
        margin: added to the optimistic accuracy.

    Returns:
        The verdict; its reason names the trial that dominates the optimistic figures.
    """
    gains = sorted(r.accuracy - r.rungs[key] for r in records if key in r.rungs)
    if len(gains) < warmup:
        return Verdict(False, None, f"warming up ({len(gains)} of {warmup} trials scored)")
    gain = gains[round(quantile * (len(gains) - 1))]
    optimistic = accuracy + max(0.0, gain) + margin
    hope = f"{accuracy:.4f} at step {key}, at best {optimistic:.4f} at the end"
    if floor is not None and optimistic < floor:
        return Verdict(True, optimistic, f"{hope}: below the accuracy floor {floor:.4f}")
    mine = (optimistic, latency_ms, size_bytes)
    for r in sorted(records, key=lambda r: r.number):
        if r.feasible and dominates((r.accuracy, r.latency_ms, r.size_bytes), mine):
            return Verdict(
                True,
                optimistic,
                f"{hope}: dominated by trial {r.number} ({r.accuracy:.4f}, "
                f"{r.latency_ms:.3f} ms, {r.size_bytes / 1000:.1f} kB)",
            )
    return Verdict(False, optimistic, f"{hope}: not dominated")


class TrialStopped(Exception):
    """Raised from the fine-tune's `on_step` to end a hopeless trial's fine-tune there."""

    def __init__(self, step: int, accuracy: float, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.accuracy = accuracy
        self.reason = reason


@contextmanager
def _untouched(model: nn.Module, task: Task) -> Iterator[None]:
    """Within the block the model and data may be used; afterwards training goes on as if not.

    Restores the model's buffers (BatchNorm running statistics, fake-quant ranges), each
    module's train/eval mode, the random number generators (dropout) and the data loaders'
    shuffling generators (the final BatchNorm recalibration draws the same batches).
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}
    generators = [
        g
        for g in (getattr(task.train, "generator", None), getattr(task.val, "generator", None))
        if isinstance(g, torch.Generator)
    ]
    states = [g.get_state() for g in generators]
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        for module, training in modes.items():
            module.train(training)
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)


def score_midway(model: nn.Module, task: Task) -> float:
    """The model's score now, computed as the final one is, without disturbing its training.

    As at the end of `finetune`: BatchNorm recalibrated on training batches (`RUNG_BN_BATCHES`
    of them), eval mode, then `task.metric` on the validation split. Everything that changes
    is restored afterwards.
    """
    with _untouched(model, task):
        recalibrate_batchnorm(model, task.train, batches=RUNG_BN_BATCHES)
        model.eval()
        return float(task.metric(model, task.val))


class EarlyStopper:
    """Judges one study's running trials at their rungs (see the module docstring).

    Args:
        study: the study whose completed trials are the evidence (read at each rung, so
            trials finished by other workers count).
        floor: the lowest accuracy `--max-drop` allows; None without one.
        warmup: see `judge`; None: `WARMUP_RECORDS`.
        margin: see `judge`; None: `MARGIN`.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        floor: float | None = None,
        warmup: int | None = None,
        margin: float | None = None,
    ) -> None:
        self.study = study
        self.floor = floor
        self.warmup = WARMUP_RECORDS if warmup is None else warmup
        self.margin = MARGIN if margin is None else margin

    def watch(
        self,
        model: nn.Module,
        task: Task,
        *,
        steps: int,
        latency_ms: float,
        size_bytes: float,
        scores: dict[str, float],
    ) -> Callable[[int, float], None]:
        """An `on_step` for `finetune`: at each rung, score the model and maybe stop.

        Args:
            model: the model being fine-tuned.
            task: its task.
            steps: the fine-tune's length.
            latency_ms: the trial's latency.
            size_bytes: the trial's size.
            scores: filled with the rung scores (`rung_key` -> accuracy) as they are taken.

        Returns:
            The callback; it raises `TrialStopped` when the trial is beyond hope.
        """
        rungs = set(rung_steps(steps))

        def on_step(step: int, loss: float) -> None:
            if step not in rungs:
                return
            key = rung_key(step, steps)
            records = records_of(self.study)
            scored = sum(key in r.rungs for r in records)
            if scored >= self.warmup and not self._could_stop(records, latency_ms, size_bytes):
                return  # scoring costs ~3.5 training steps; spend them only where they may pay
            accuracy = score_midway(model, task)
            scores[key] = accuracy
            verdict = judge(
                key,
                accuracy,
                latency_ms,
                size_bytes,
                records,
                floor=self.floor,
                warmup=self.warmup,
                margin=self.margin,
            )
            if verdict.stop:
                raise TrialStopped(step, accuracy, verdict.reason)

        return on_step

    def _could_stop(self, records: Sequence[Record], latency_ms: float, size_bytes: float) -> bool:
        """Whether some accuracy would stop the trial: a floor, or a completed feasible trial
        at least as fast and as small (nothing else can dominate it)."""
        return self.floor is not None or any(
            r.feasible and r.latency_ms <= latency_ms and r.size_bytes <= size_bytes
            for r in records
        )


def stopped_figures(figures: dict[str, Any], stop: TrialStopped) -> dict[str, Any]:
    """A stopped trial's user attributes: its figures so far, where and why it stopped."""
    return {
        **figures,
        "accuracy": stop.accuracy,
        "stopped_at_step": stop.step,
        "stop_reason": stop.reason,
    }


def describe_stopped(study: optuna.Study) -> list[str]:
    """One line for `show` counting the trials stopped early, or none."""
    count = sum(
        "stop_reason" in t.user_attrs
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    )
    if not count:
        return []
    return [
        f"{count} trial{'s' if count != 1 else ''} stopped early (dominated beyond hope; the "
        "report's timeline says by which trial)"
    ]
