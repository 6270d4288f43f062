"""The search progress bar's choice of the best feasible candidate."""

from __future__ import annotations

from autocompress.optimize.progress import SearchProgress


def _figures(accuracy: float, latency_ms: float, size_bytes: int) -> dict[str, float]:
    return {"accuracy": accuracy, "latency_ms": latency_ms, "size_bytes": size_bytes}


def test_best_is_the_most_accurate_feasible_then_the_fastest() -> None:
    progress = SearchProgress(total=4, enabled=False, notes=[])
    progress.trial_done(_figures(0.9926, 0.398, 332_176), feasible=True)
    progress.trial_done(_figures(0.9990, 0.100, 100_000), feasible=False)  # over budget
    progress.trial_done(_figures(0.9926, 0.236, 104_869), feasible=True)  # as accurate, faster
    progress.trial_done(_figures(0.9900, 0.100, 50_000), feasible=True)
    assert progress.best == _figures(0.9926, 0.236, 104_869)
    assert progress._describe() == "best feasible: 99.3% at 0.24 ms, 105 kB"
