"""The timing protocol: a candidate's latency, interleaved with a reference, checked for contention.

Absolute times drift between runs even on an idle machine, so the figure to trust is the median of
paired per-round ratios candidate/reference; the absolute median is reported alongside it.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

_NS_PER_MS = 1e6

# Times one call of its argument, in nanoseconds.
Clock = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Measurement:
    """The latency of one candidate, measured in one run.

    Attributes:
        median_ms: median of the candidate's per-block median call times.
        p10_ms: 10th percentile of the candidate over all its timed calls.
        p90_ms: 90th percentile of the candidate over all its timed calls.
        reference_ms: median of the reference's per-block medians; None without a reference.
        ratio: median over rounds of candidate block median / reference block median;
            None without a reference.
        rounds: rounds timed (one candidate block and one reference block each).
        calls_per_block: calls per block, the same for candidate and reference.
        threads: torch intra-op threads used while timing.
        remeasured_blocks: blocks re-timed because contention was detected.
        to_dense: the ratio to the dense model of the model it was timed against, by which
            `ratio` and `reference_ms` were carried to the dense model (1.0: timed against the
            dense model itself; see `Target.reference_for`).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    reference_ms: float | None
    ratio: float | None
    rounds: int
    calls_per_block: int
    threads: int
    remeasured_blocks: int
    to_dense: float = 1.0

    def to_dict(self) -> dict[str, float | int | None]:
        """The fields as a plain dict (JSON-ready); `Measurement(**m.to_dict()) == m`."""
        return asdict(self)


def measure_latency(
    candidate: Callable[[], object],
    reference: Callable[[], object] | None = None,
    *,
    threads: int = 1,
    rounds: int = 15,
    warmup_s: float = 0.2,
    min_block_ms: float = 20.0,
    max_spread: float = 0.5,
    max_retries: int = 3,
    clock: Clock | None = None,
) -> Measurement:
    """Time `candidate` (and `reference`, interleaved block by block) on this machine.

    Each round times one block of the candidate and one of the reference, alternating which goes
    first. A block is `calls_per_block` back-to-back calls and is summarised by its median call
    time. A block is re-timed (up to `max_retries` times) when it looks contended: its spread
    (p90 - p10) / median exceeds `max_spread`, or other processes used more than half a core
    during it (read from /proc; skipped where /proc is unavailable).

    Args:
        candidate: zero-argument callable to time.
        reference: zero-argument callable timed in the same rounds; None to time the candidate only.
        threads: torch intra-op threads for the duration; the previous setting is restored.
        rounds: number of rounds.
        warmup_s: warm-up time per callable before timing (at least 3 calls each).
        min_block_ms: target duration of one block; sets calls_per_block (at least 3).
        max_spread: in-block (p90 - p10) / median above which a block counts as contended.
        max_retries: re-timings allowed per contended block; the last attempt is kept.
        clock: times one call of its argument and returns nanoseconds; None for the wall
            clock (`perf_counter_ns`). A GPU target passes one built on its device's events.

    Returns:
        A Measurement; `ratio` and `reference_ms` are None when `reference` is None.

    Raises:
        ValueError: threads or rounds below 1, or max_retries below 0.
    """
    if threads < 1 or rounds < 1 or max_retries < 0:
        raise ValueError(
            f"need threads >= 1, rounds >= 1, max_retries >= 0; "
            f"got {threads}, {rounds}, {max_retries}"
        )
    fns = [candidate] if reference is None else [candidate, reference]
    gc_was_enabled = gc.isenabled()
    with torch_threads(threads):
        try:
            tick = clock or wall_clock
            per_call_ns = min(_warm_up(fn, warmup_s, tick) for fn in fns)
            calls = max(3, math.ceil(min_block_ms * _NS_PER_MS / max(per_call_ns, 1.0)))
            # A collection in the middle of a block is noise that belongs to neither callable.
            gc.disable()
            block_medians: list[list[float]] = [[] for _ in fns]
            candidate_calls: list[np.ndarray] = []
            remeasured = 0
            for r in range(rounds):
                order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
                for i in order:
                    times, retried = _time_clean_block(fns[i], calls, max_spread, max_retries, tick)
                    remeasured += retried
                    block_medians[i].append(float(np.median(times)))
                    if i == 0:
                        candidate_calls.append(times)
        finally:
            if gc_was_enabled:
                gc.enable()

    all_calls = np.concatenate(candidate_calls)
    ref_ms = ratio = None
    if reference is not None:
        cand, ref = np.asarray(block_medians[0]), np.asarray(block_medians[1])
        ref_ms = float(np.median(ref)) / _NS_PER_MS
        ratio = float(np.median(cand / ref))
    return Measurement(
        median_ms=float(np.median(block_medians[0])) / _NS_PER_MS,
        p10_ms=float(np.percentile(all_calls, 10)) / _NS_PER_MS,
        p90_ms=float(np.percentile(all_calls, 90)) / _NS_PER_MS,
        reference_ms=ref_ms,
        ratio=ratio,
        rounds=rounds,
        calls_per_block=calls,
        threads=threads,
        remeasured_blocks=remeasured,
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def wall_clock(fn: Callable[[], object]) -> float:
    """Call `fn` once; return the wall time it took in nanoseconds."""
    start = time.perf_counter_ns()
    fn()
    return float(time.perf_counter_ns() - start)


def _warm_up(fn: Callable[[], object], warmup_s: float, clock: Clock) -> float:
    """Call `fn` for about `warmup_s` seconds (at least 3 calls); return its median call in ns."""
    times: list[float] = []
    deadline = time.perf_counter_ns() + warmup_s * 1e9
    while len(times) < 3 or time.perf_counter_ns() < deadline:
        times.append(clock(fn))
    # The first calls pay for allocation and caches; judge the speed on the second half.
    return float(np.median(times[len(times) // 2 :]))


def _time_clean_block(
    fn: Callable[[], object], calls: int, max_spread: float, max_retries: int, clock: Clock
) -> tuple[np.ndarray, bool]:
    """Time one block, re-timing it while it looks contended; return (call times in ns, retried)."""
    attempts = 0
    while True:
        times, other_cores = _time_block(fn, calls, clock)
        p10, p50, p90 = np.percentile(times, [10, 50, 90])
        spread = (p90 - p10) / p50 if p50 > 0 else 0.0
        contended = spread > max_spread or (other_cores is not None and other_cores > 0.5)
        if not contended or attempts == max_retries:
            return times, attempts > 0
        attempts += 1


def _time_block(
    fn: Callable[[], object], calls: int, clock: Clock
) -> tuple[np.ndarray, float | None]:
    """Call `fn` `calls` times; return the call times in ns and the cores other processes used."""
    times = np.empty(calls, dtype=np.float64)
    before = _cpu_jiffies()
    block_start = time.perf_counter_ns()
    for k in range(calls):
        times[k] = clock(fn)
    wall_s = (time.perf_counter_ns() - block_start) / 1e9
    after = _cpu_jiffies()
    if before is None or after is None or wall_s <= 0:
        return times, None
    other_jiffies = (after[0] - before[0]) - (after[1] - before[1])
    # The kernel counts CPU time in whole ticks, sampled separately for the machine and for this
    # process, so either count can be one tick off; forgive one tick before blaming a neighbour.
    other_jiffies = max(0, other_jiffies - 1)
    return times, other_jiffies / _CLK_TCK / wall_s


def _read_clk_tck() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


_CLK_TCK = _read_clk_tck()


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, CPU ticks of this process), or None without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            # The command name (field 2) may contain spaces; fields after it are space-separated.
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    # /proc/stat: user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
    # is already included in user, and idle + iowait is the only time nobody ran.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    # After the name: state is index 0, so utime (field 14) and stime (field 15) are 11 and 12.
    return busy, int(own[11]) + int(own[12])


def other_cores_busy(window_s: float = 0.2) -> float | None:
    """How many cores other processes kept busy during a short pause of this one.

    Args:
        window_s: how long to watch; this process sleeps meanwhile.

    Returns:
        Cores' worth of CPU time used by everyone else (0.0 = quiet), or None without /proc.
    """
    before = _cpu_jiffies()
    start = time.perf_counter()
    time.sleep(window_s)
    after = _cpu_jiffies()
    wall_s = time.perf_counter() - start
    if before is None or after is None:
        return None
    other = max(0, (after[0] - before[0]) - (after[1] - before[1]) - 1)
    return other / _CLK_TCK / wall_s
