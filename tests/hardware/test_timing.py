"""The timing protocol: ratios that reflect real work, thread restore, contention re-timing."""

from __future__ import annotations

import gc
import itertools

import pytest
import torch

from autocompress.hardware import timing
from autocompress.hardware.timing import Measurement, measure_latency

# Small enough that a test file stays fast, large enough that a call dwarfs Python overhead.
_A = torch.randn(192, 192)


def _one_matmul() -> object:
    return _A @ _A


def _two_matmuls() -> object:
    return (_A @ _A, _A @ _A)


_FAST = {"rounds": 7, "warmup_s": 0.05, "min_block_ms": 10.0}


def test_double_work_gives_ratio_near_two() -> None:
    m = measure_latency(_two_matmuls, _one_matmul, **_FAST)
    assert m.ratio is not None
    assert 1.3 < m.ratio < 3.0
    assert m.reference_ms is not None and m.reference_ms > 0
    assert m.median_ms > m.reference_ms


def test_identical_callables_give_ratio_near_one() -> None:
    m = measure_latency(_one_matmul, _one_matmul, **_FAST)
    assert m.ratio is not None
    assert 0.8 < m.ratio < 1.25


def test_without_reference_ratio_is_none() -> None:
    m = measure_latency(_one_matmul, rounds=3, warmup_s=0.02)
    assert m.ratio is None and m.reference_ms is None
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.rounds == 3 and m.threads == 1


def test_calls_per_block_at_least_three_even_for_slow_calls() -> None:
    m = measure_latency(_one_matmul, rounds=2, warmup_s=0.0, min_block_ms=0.0)
    assert m.calls_per_block >= 3


def test_calls_per_block_fills_the_block() -> None:
    m = measure_latency(_one_matmul, rounds=2, warmup_s=0.02, min_block_ms=10.0)
    assert m.calls_per_block * m.median_ms > 5.0


def test_threads_are_set_during_and_restored_after() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    m = measure_latency(
        lambda: seen.append(torch.get_num_threads()),
        threads=2,
        rounds=2,
        warmup_s=0.0,
        min_block_ms=0.1,
    )
    assert set(seen) == {2}
    assert m.threads == 2
    assert torch.get_num_threads() == before


def test_threads_and_gc_restored_after_callable_raises() -> None:
    before = torch.get_num_threads()
    calls = itertools.count()

    def fails_after_a_few_calls() -> None:
        if next(calls) > 5:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(fails_after_a_few_calls, threads=before + 1, rounds=3, warmup_s=0.0)
    assert torch.get_num_threads() == before
    assert gc.isenabled()


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"rounds": 0}, {"max_retries": -1}])
def test_bad_arguments_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        measure_latency(_one_matmul, **kwargs)


def test_to_dict_round_trips() -> None:
    m = measure_latency(_one_matmul, _one_matmul, rounds=2, warmup_s=0.0, min_block_ms=1.0)
    d = m.to_dict()
    assert set(d) == {
        "median_ms",
        "p10_ms",
        "p90_ms",
        "reference_ms",
        "ratio",
        "rounds",
        "calls_per_block",
        "threads",
        "remeasured_blocks",
        "to_dense",
    }
    assert d["to_dense"] == 1.0  # timed against the dense model itself
    assert Measurement(**d) == m
    # records from before `to_dense` read back as timed against the dense model
    assert Measurement(**{k: v for k, v in d.items() if k != "to_dense"}) == m


def test_busy_neighbour_in_proc_stat_triggers_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each read reports another 10 s of machine-wide CPU time that this process did not use.
    ticks = itertools.count(step=1000)
    monkeypatch.setattr(timing, "_cpu_jiffies", lambda: (next(ticks), 0))
    m = measure_latency(
        _one_matmul,
        _one_matmul,
        rounds=3,
        warmup_s=0.0,
        min_block_ms=1.0,
        max_spread=float("inf"),
        max_retries=2,
    )
    assert m.remeasured_blocks == 2 * 3


def test_quiet_proc_stat_and_no_spread_limit_means_no_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "_cpu_jiffies", lambda: (0, 0))
    m = measure_latency(
        _one_matmul, _one_matmul, rounds=3, warmup_s=0.0, min_block_ms=1.0, max_spread=float("inf")
    )
    assert m.remeasured_blocks == 0


def test_without_proc_a_wide_spread_still_triggers_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "_cpu_jiffies", lambda: None)
    calls = itertools.count()

    def uneven() -> object:
        # Every other call does 4x the work: (p90 - p10) / median is far above the limit.
        return [_A @ _A for _ in range(4 if next(calls) % 2 else 1)]

    m = measure_latency(uneven, rounds=3, warmup_s=0.0, min_block_ms=2.0, max_spread=0.5)
    assert m.remeasured_blocks == 3


def test_cpu_jiffies_reads_proc_when_present() -> None:
    sample = timing._cpu_jiffies()
    if sample is None:
        pytest.skip("no /proc on this system")
    busy, own = sample
    assert busy >= own >= 0
