"""A new study starts with the space's uniform plans unless --no-warm-start says otherwise."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autocompress.cli import main

F = "tests.factories"
# What is stored about each trial is tested, not the latencies' precision.
pytestmark = pytest.mark.usefixtures("quick_timing")


@pytest.mark.parametrize("flags", [[], ["--no-warm-start"]])
def test_warm_starts_are_queued_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    space = tmp_path / "keep.yaml"
    space.write_text("version: 1\ndefaults:\n  keep_ratio: [1.0, 0.75, 0.5]\n")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code = main(
        ["search", "--model", f"{F}:tiny_mlp", "--task", f"{F}:tiny_task", "--space", str(space),
         "--storage", storage, "--study", "s", "--trials", "3", "--finetune-steps", "1",
         "--sampler", "random", "--seed", "3", "--budget", "1s", "--quiet", *flags]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 3
    warm = [t.number for t in trials if t.user_attrs.get("warm_start") == "uniform"]
    if flags:
        assert warm == []
    else:
        assert warm and warm == list(range(len(warm)))  # uniform plans before sampled ones
