"""What a search is asked for: `autocompress.search`'s options as one checked value, the one
thing a worker process receives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from autocompress.config import DEFAULT_FINETUNE_STEPS, DEFAULT_POLISH, DEFAULT_TARGET, Budget
from autocompress.errors import UserInputError
from autocompress.hardware.targets import Target
from autocompress.optimize.heartbeat import DEFAULT_HEARTBEAT_S
from autocompress.optimize.study import make_sampler
from autocompress.optimize.workers import split_trials
from autocompress.space.spec import SearchSpace
from autocompress.task import Task

DEFAULT_MODEL = "digits-resnet"


@dataclass(frozen=True)
class SearchOptions:
    """A search's options, each as `autocompress.search` documents it (`optimize.run.search`).

    Raises:
        UserInputError: `check` finds an option out of range (before anything is loaded).
    """

    model: str | nn.Module = DEFAULT_MODEL
    task: str | Task | None = None
    target: str | Target = DEFAULT_TARGET
    threads: int = 1
    budget: Budget | None = None
    space: str | SearchSpace | None = None
    methods: Sequence[str] | None = None
    trials: int = 30
    timeout_s: float | None = None
    sampler: str = "nsga2"
    finetune_steps: int = DEFAULT_FINETUNE_STEPS
    seed: int = 0
    study: str | None = None
    storage: str | None = None
    batch_size: int = 1
    train_threads: int | None = None
    latency: str = "predicted"
    show_progress: bool = True
    workers: int = 1
    heartbeat_s: int | None = DEFAULT_HEARTBEAT_S
    alternatives: bool = True
    early_stop: bool = False
    warm_start: bool = True
    allocate: bool = True
    polish: int = DEFAULT_POLISH

    def check(self) -> None:
        """Refuse an option out of range, naming the flag and the value given."""
        if self.trials < 1:
            raise UserInputError(f"--trials must be at least 1, got {self.trials}")
        if self.polish < 0:
            raise UserInputError(f"--polish must be 0 or more, got {self.polish}")
        if self.finetune_steps < 0:
            raise UserInputError(f"--finetune-steps must be 0 or more, got {self.finetune_steps}")
        if self.train_threads is not None and self.train_threads < 1:
            raise UserInputError(f"--train-threads must be at least 1, got {self.train_threads}")
        if self.latency not in ("predicted", "measured"):
            raise UserInputError(f"--latency must be predicted or measured, got {self.latency!r}")
        if self.batch_size < 1:  # checked again where the batch is built; here before loading
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        timeout = self.timeout_s
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise UserInputError(f"--timeout must be a positive number of seconds, got {timeout}")
        if not 0 <= self.seed < 2**32:
            raise UserInputError(f"--seed must be in 0 .. {2**32 - 1}, got {self.seed}")
        if self.heartbeat_s is not None and self.heartbeat_s < 1:
            raise UserInputError(f"--heartbeat must be at least 1 second, got {self.heartbeat_s}")
        split_trials(self.trials, self.workers)  # --workers, without a list as long as it
        if self.sampler not in ("nsga2", "tpe", "random"):
            make_sampler(self.sampler, seed=self.seed, population_size=2)  # the listing error
