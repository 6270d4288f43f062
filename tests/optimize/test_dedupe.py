"""A plan already scored is told again with its figures, but not with its bookkeeping: the
copy says which process ran it and is no warm start or retry."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from autocompress.optimize import trial_loop

F = "tests.factories"
# What is stored about each trial is tested, not the latencies' precision.
pytestmark = pytest.mark.usefixtures("quick_timing")


def test_a_told_again_plan_keeps_its_own_worker_and_queue_attributes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "two-plans.yaml"
    space.write_text("version: 1\ndefaults:\n  keep_ratio: [1.0, 0.5]\n")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code = main(
        ["search", "--model", f"{F}:tiny_mlp", "--task", f"{F}:tiny_task", "--space", str(space),
         "--storage", storage, "--study", "s", "--trials", "4", "--finetune-steps", "1",
         "--sampler", "random", "--budget", "1s", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="s", storage=storage).trials
    copies = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(copies) >= 2, "4 trials over 2 plans tell at least 2 plans again"
    for t in copies:
        original = trials[t.user_attrs["duplicate_of"]]
        assert t.values == original.values
        assert t.user_attrs["worker"] == trial_loop.WORKER
        assert "warm_start" not in t.user_attrs and "retry_of" not in t.user_attrs
    assert "warm_start" in trials[0].user_attrs  # the queued uniform plan ran first
