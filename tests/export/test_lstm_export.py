"""digits-lstm searches and exports like the CNNs: a tiny study in the rnn space, exported,
reloaded without its code, and matching the study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import autocompress
from autocompress.cli import main
from autocompress.config import Budget
from autocompress.optimize.run import search
from autocompress.zoo import load_task


@pytest.mark.usefixtures("quick_timing")  # the figures export uses, not their precision
def test_lstm_search_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = search(
        "digits-lstm",
        space="rnn",
        methods=["prune"],  # eager plans: int8 LSTMs are covered in tests/compress/test_lstm.py
        trials=2,
        finetune_steps=5,
        budget=Budget(latency_ms=10.0),
        study="lstm",
        storage=url,
        train_threads=1,
        latency="measured",
        show_progress=False,
    )
    assert result.trials_run == 2 and result.trials_failed == 0 and result.front
    kept = [c["plan"]["layers"].get("lstm", {}).get("keep_ratio", 1.0) for c in result.front]
    assert min(kept) < 1.0  # the warm start (hidden units pruned to 0.75) is on the front
    out = tmp_path / "deploy"
    code = main(["export", "--study", "lstm", "--storage", url, "--pick", "most-accurate",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    task = load_task("digits-lstm")
    model = autocompress.load(out)
    assert task.metric(model, task.val) == pytest.approx(metrics["accuracy"], abs=0.005)
    assert metrics["accuracy"] > 0.5
