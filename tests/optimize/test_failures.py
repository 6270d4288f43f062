"""A trial that fails (NaN loss, out of memory, a plan that cannot be applied) is stored as
failed with its reason, listed by `show` and the report, and the search goes on."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from autocompress.report.data import report_data

F = "tests.factories"
# What is stored about each trial is tested, not the latencies' precision.
pytestmark = pytest.mark.usefixtures("quick_timing")


@pytest.mark.parametrize(
    ("model", "task", "reason"),
    [
        ("tiny_mlp", "nan_loss_task", "FinetuneError: fine-tune loss became nan at step 1"),
        ("out_of_memory_mlp", "tiny_task", "out of memory (OutOfMemoryError: tried to allocate"),
        ("fixed_width_mlp", "tiny_task", "RuntimeError"),
        ("tiny_mlp", "nan_metric_task", "ValueError: the task's metric returned nan for this"),
    ],
    ids=["nan-loss", "out-of-memory", "plan-cannot-be-applied", "nan-metric"],
)
def test_failed_trials_are_stored_shown_and_the_search_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, task: str, reason: str
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = ["--model", f"{F}:{model}", "--task", f"{F}:{task}", "--study", "s"]
    code = main(
        ["search", *argv, "--target", "cpu", "--storage", storage, "--trials", "2",
         "--finetune-steps", "2",
         "--sampler", "random", "--methods", "prune", "--budget", "1s", "--quiet"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"trial failed: {reason}" in err

    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 2, "every trial asked for is stored, failed or not"
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed, "the factory's model fails every pruned plan, and the warm starts prune"
    assert all(reason in t.user_attrs["fail_reason"] for t in failed)

    assert main(["show", "--study", "s", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed:" in out
    assert f"#{failed[0].number}: {reason}" in out

    assert main(["show", "--study", "s", "--storage", storage, "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.lstrip().startswith("["), "show --json stays a list of candidates"
    assert f"#{failed[0].number}: {reason}" in err

    timeline = report_data(study)["timeline"]
    assert {r["trial"]: r["fail_reason"] for r in timeline if r["state"] == "FAIL"} == {
        t.number: t.user_attrs["fail_reason"] for t in failed
    }
