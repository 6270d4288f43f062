"""The search's progress bar: trials done, best feasible candidate so far, time left."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SearchProgress:
    """A rich progress bar on stderr, or nothing when disabled (notes are still printed).

    Args:
        total: trials this run will attempt.
        enabled: draw the bar.
        notes: lines to print before the bar starts (e.g. budget warnings).
    """

    def __init__(self, *, total: int, enabled: bool, notes: list[str]) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.best: dict[str, Any] | None = None
        self.failures = 0
        self.stopped = 0
        for note in notes:
            self.note(note)
        self._progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("search", total=total, best="best feasible: none yet")

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def _describe(self) -> str:
        text = "best feasible: none yet"
        if self.best is not None:
            b = self.best
            text = (
                f"best feasible: {100 * b['accuracy']:.1f}% at {b['latency_ms']:.2f} ms, "
                f"{b['size_bytes'] / 1000:.0f} kB"
            )
        if self.stopped:
            text += f" | {self.stopped} stopped early"
        if self.failures:
            text += f" | {self.failures} failed"
        return text

    def trial_done(self, figures: dict[str, Any], *, feasible: bool) -> None:
        """Count a finished trial; keep the most accurate feasible one for display (of equally
        accurate ones, the fastest, then the smallest)."""

        def rank(f: dict[str, Any]) -> tuple[float, float, float]:
            return f["accuracy"], -f["latency_ms"], -f["size_bytes"]

        if feasible and (self.best is None or rank(figures) > rank(self.best)):
            self.best = figures
        self._progress.update(self._task, advance=1, best=self._describe())

    def trial_stopped(self, figures: dict[str, Any]) -> None:
        """Count a trial stopped early (its fine-tune was dominated beyond hope)."""
        self.stopped += 1
        self._progress.update(self._task, advance=1, best=self._describe())

    def note(self, text: str) -> None:
        """Print a note while the trials run (a step of the search that gave up, e.g.)."""
        self.console.print(f"[yellow]note:[/] {text}", highlight=False)

    def trial_failed(self, reason: str) -> None:
        """Count a failed trial and print why."""
        self.failures += 1
        self.console.print(f"[red]trial failed:[/] {reason}", highlight=False)
        self._progress.update(self._task, advance=1, best=self._describe())
