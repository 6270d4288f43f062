"""`autocompress export` on a runtime target: the runtime's own artifact, reloaded and checked
in that runtime, beside model.pt2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.cli import main
from autocompress.config import Budget
from autocompress.optimize.run import search
from autocompress.optimize.study import load_study


@pytest.mark.usefixtures("quick_timing")  # that latencies are recorded, not their precision
@pytest.mark.parametrize(
    ("target", "artifact", "files"),
    [
        ("cpu:onnxruntime", "model.onnx", ["model.onnx"]),
        ("cpu:openvino", "model.xml", ["model.bin", "model.xml"]),
    ],
)
def test_export_writes_the_runtime_artifact_and_checks_it_there(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    artifact: str,
    files: list[str],
) -> None:
    pytest.importorskip("onnxruntime" if target == "cpu:onnxruntime" else "openvino")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = search(
        "digits-cnn", target=target, space="runtime", trials=2, finetune_steps=5,
        budget=Budget(latency_ms=10.0), study="rt", storage=url, train_threads=1,
        latency="measured", show_progress=False,
    )  # fmt: skip
    # The study lists the dense model in the runtime at fp32 and int8, and eager PyTorch.
    labels = [a["label"] for a in result.alternatives]
    assert len(labels) == 3 and all("latency_ms" in a for a in result.alternatives)
    assert all(c["best_alternative"] in labels for c in result.front)
    trial = result.front[0]["trial"]
    out = tmp_path / "out"
    assert main(["export", "--study", "rt", "--storage", url, "--trial", str(trial),
                 "--out", str(out)]) == 0, capsys.readouterr().err  # fmt: skip
    stdout = capsys.readouterr().out
    assert f"{artifact} checked in" in stdout
    present = sorted(p.name for p in out.iterdir())
    assert set(files) <= set(present) and "model.pt2" in present
    metrics = json.loads((out / "metrics.json").read_text())
    runtime = metrics["runtime"]
    assert runtime["file"] == artifact and runtime["files"] == files
    assert runtime["outputs"]["passed"]
    # The study scored the candidate as the runtime runs it: the artifact replays it exactly.
    attrs = load_study("rt", url).trials[trial].user_attrs
    assert runtime["accuracy"] == attrs["accuracy"] == metrics["accuracy"]
    assert abs(metrics["pt2_accuracy"] - attrs["candidate_accuracy"]) <= 0.005
    # Latency in metrics.json is the runtime artifact's, against the dense model there.
    assert metrics["latency_ratio"] == runtime["latency_ratio"] > 0
    # Timed against the reference the study timed the trial against, and carried to the dense
    # model by the study's own ratio of it (the int8 twin's on an int8 plan, else 1.0).
    study_to_dense = attrs["measurement"]["to_dense"]
    assert runtime["reference_to_dense"] == runtime["measurement"]["to_dense"] == study_to_dense
    if runtime["int8_nodes"]:
        assert study_to_dense < 1.0
    # ...and against the in-memory graph the search timed, interleaved with it.
    assert runtime["latency_vs_in_memory_ratio"] > 0
    assert f"{runtime['latency_vs_in_memory_ratio']:.2f}x the graph the search timed" in stdout
