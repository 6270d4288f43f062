"""The fine-tune thread policy: all cores on a quiet machine, one when a neighbour is busy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from autocompress.hardware import timing
from autocompress.optimize import objectives


@pytest.mark.parametrize(("busy", "expected"), [(0.0, 4), (0.2, 4), (0.9, 1), (None, 1)])
def test_training_threads_follows_the_neighbours(
    monkeypatch: pytest.MonkeyPatch, busy: float | None, expected: int
) -> None:
    monkeypatch.setattr(objectives, "other_cores_busy", lambda: busy)
    monkeypatch.setattr(objectives.os, "cpu_count", lambda: 4)
    assert objectives.training_threads() == expected


def test_torch_threads_restores_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), timing.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_other_cores_busy_sees_a_spinning_process() -> None:
    if timing.other_cores_busy(0.01) is None:
        pytest.skip("no /proc on this machine")
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # let it start spinning
        assert timing.other_cores_busy(0.5) > 0.5
    finally:
        neighbour.kill()
        neighbour.wait()
