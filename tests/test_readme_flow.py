"""README's flow end to end, with the defaults a user gets: search -> show -> report -> export.

Predicted latency (a profile first), the verify step that measures the front, and the plain
alternatives all run as they do for a user; only the sizes are small (digits-cnn, pruning
alone, 8 trials, 5 fine-tune steps, a profile of 3 whole plans). Every command goes through
`main`, as typed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import autocompress
from autocompress.cli import main
from autocompress.optimize import record
from autocompress.optimize.study import load_study
from autocompress.zoo import load_task
from tests.conftest import copy_zoo_weights, time_quickly

STUDY = "digits-cnn-cpu:onnxruntime"  # the default target


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, digits_cnn_weights: Path) -> Path:
    """README's `search`, predicted latency and everything else by default, in a fresh folder
    (digits-cnn already trained: the zoo's tests train it; quick timing: the figures' use is
    tested here, not their precision)."""
    root = tmp_path_factory.mktemp("readme")
    copy_zoo_weights(digits_cnn_weights, root / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("AUTOCOMPRESS_CACHE_DIR", str(root / "cache"))
        time_quickly(mp)
        # Pruning alone keeps the profile short (no int8 kernels to compile and time).
        profile = ["profile", "--model", "digits-cnn", "--methods", "prune", "--plans", "3"]
        assert main([*profile, "--quiet"]) == 0
        # A loose budget, so that the front has feasible candidates to pick from.
        search = ["search", "--model", "digits-cnn", "--methods", "prune", "--trials", "8"]
        assert main([*search, "--finetune-steps", "5", "--budget", "50ms", "--quiet"]) == 0
    return root


@pytest.fixture
def workdir(searched: Path, monkeypatch: pytest.MonkeyPatch, quick_timing: None) -> Path:
    monkeypatch.chdir(searched)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(searched / "cache"))
    return searched


def show_json(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, out, err = run_cli(capsys, "show", "--study", STUDY, "--json")
    assert code == 0, err
    return json.loads(out)


def test_show_lists_a_front_measured_after_a_predicted_search(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    front = show_json(capsys)
    assert front and any(c["feasible"] for c in front)
    for c in front:
        # Scored by the predictor, then built and timed by the verify step.
        assert c["predicted_ms"] > 0 and c["measured_ms"] > 0
        assert c["latency_ms"] == c["measured_ms"]
        # The plain alternatives (ONNX Runtime fp32 and int8) were timed too.
        assert c["best_alternative"] and c["best_alternative_ms"] > 0
    code, out, _ = run_cli(capsys, "show", "--study", STUDY)
    assert code == 0 and f"Pareto front of study {STUDY}" in out


def test_a_new_study_starts_from_uniform_and_allocated_plans(workdir: Path) -> None:
    """Beside the uniform warm starts, the plans allocated from the measured sensitivity run
    first; each is a per-layer plan (not every group at one keep ratio) no uniform one repeats."""
    study = load_study(STUDY, None)
    origin = {t.number: t.user_attrs.get("warm_start") for t in study.trials}
    uniform = [t.params for t in study.trials if origin[t.number] == "uniform"]
    allocated = [t.params for t in study.trials if origin[t.number] == "allocated"]
    assert uniform and allocated, origin
    assert all(p not in uniform for p in allocated)
    assert any(len(set(p.values())) > 1 for p in allocated)
    sensitivity = list((workdir / "cache" / "sensitivity" / "digits-cnn").glob("*.json"))
    assert len(sensitivity) == 1
    # The study keeps what the plans were allocated from, for the report's grid.
    kept = record.read(study).sensitivity
    assert kept is not None and kept["file"] == str(sensitivity[0])
    assert kept["rows"] == json.loads(sensitivity[0].read_text())["rows"]


def test_report_writes_one_page(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "report", "--study", STUDY)
    assert code == 0, err
    page = workdir / "reports" / "digits-cnn-cpu_onnxruntime" / "index.html"
    assert "report: reports/digits-cnn-cpu_onnxruntime/index.html" in out  # ':' is not kept
    assert page.stat().st_size > 10_000 and "<html" in page.read_text()[:1000].lower()
    assert 'id="fig-sensitivity"' in page.read_text()


@pytest.mark.parametrize("pick", ["fastest", "smallest", "most-accurate"])
def test_export_each_pick_and_load_it(
    workdir: Path, capsys: pytest.CaptureFixture[str], pick: str
) -> None:
    feasible = [c for c in show_json(capsys) if c["feasible"]]
    rank = {
        "fastest": lambda c: (c["latency_ms"], -c["accuracy"], c["trial"]),
        "smallest": lambda c: (c["size_bytes"], -c["accuracy"], c["trial"]),
        "most-accurate": lambda c: (-c["accuracy"], c["latency_ms"], c["trial"]),
    }[pick]
    if pick != "most-accurate":  # no --max-drop: within the search's 1-point floor, where any
        held = [c for c in feasible if c["accuracy"] >= c["baseline_accuracy"] - 0.01]
        feasible = held or feasible
    expected = min(feasible, key=rank)

    out = workdir / f"deploy-{pick}"
    code, stdout, err = run_cli(
        capsys, "export", "--study", STUDY, "--pick", pick, "--out", str(out)
    )
    assert code == 0, err
    assert f"exported trial {expected['trial']} of study {STUDY}" in stdout
    assert "not on the study's Pareto front" not in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["study_latency_ms"] == expected["measured_ms"]
    assert metrics["study_latency_source"] == "measured" and metrics["on_front"]

    model = autocompress.load(out)
    x, _ = next(iter(load_task("digits-cnn").val))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (x.shape[0], 10) and torch.isfinite(y).all()


def test_export_a_trial_off_the_front_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_front = {c["trial"] for c in show_json(capsys)}
    study = load_study(STUDY, None)
    off = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and t.number not in on_front and "plan" in t.user_attrs
    ]
    assert off, "8 trials of digits-cnn leave some off the front"
    verified = study.user_attrs.get("verified") or {}
    trial = next(n for n in off if str(n) not in verified)

    out = workdir / "deploy-off-front"
    code, stdout, err = run_cli(
        capsys, "export", "--study", STUDY, "--trial", str(trial), "--out", str(out)
    )
    assert code == 0, err
    assert f"exported trial {trial}" in stdout
    assert f"trial {trial} is not on the study's Pareto front" in stdout
    assert f"the study never measured trial {trial}'s latency" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["study_latency_source"] == "predicted" and not metrics["on_front"]
    assert metrics["latency_ms"] > 0  # measured now, at export
    x, _ = next(iter(load_task("digits-cnn").val))
    with torch.no_grad():
        assert autocompress.load(out)(x).shape == (x.shape[0], 10)
