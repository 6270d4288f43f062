"""The command line end to end: a tiny real search, `show --json`, and the errors users hit."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from autocompress.optimize import verify
from tests.conftest import copy_zoo_weights, time_quickly

SHOW_FIELDS = {
    "trial", "accuracy", "baseline_accuracy", "predicted_ms", "measured_ms", "baseline_ms",
    "size_bytes", "baseline_size_bytes", "feasible", "plan",
}  # fmt: skip
STUDY_DB = Path("reports") / "autocompress.db"


@pytest.fixture
def workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_cnn_weights: Path, quick_timing: None
) -> Path:
    """Run in a fresh folder (default storage lands in ./reports) with a private cache that
    holds digits-cnn's trained weights and no latency profile."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    copy_zoo_weights(digits_cnn_weights, tmp_path / "cache")
    return tmp_path


@pytest.fixture(scope="module")
def searched(
    tmp_path_factory: pytest.TempPathFactory, digits_cnn_weights: Path
) -> tuple[Path, str]:
    """A tiny search (3 trials, 10 ms budget) run once in its own folder, and what it printed.

    The tests that only read its study share it; those that change a study change a copy.
    """
    root = tmp_path_factory.mktemp("cli-search")
    copy_zoo_weights(digits_cnn_weights, root / "cache")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.chdir(root)
        mp.setenv("AUTOCOMPRESS_CACHE_DIR", str(root / "cache"))
        time_quickly(mp)
        code = main(search_args("--trials", "3", "--budget", "10ms"))
    assert code == 0, err.getvalue()
    return root, out.getvalue()


@pytest.fixture
def in_searched(searched: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the shared search's folder (read only) with its cache."""
    root, _ = searched
    monkeypatch.chdir(root)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(root / "cache"))
    return root


def copy_study(searched: tuple[Path, str], workdir: Path) -> None:
    """Put the shared search's study database where a search in `workdir` finds it."""
    (workdir / STUDY_DB).parent.mkdir()
    shutil.copyfile(searched[0] / STUDY_DB, workdir / STUDY_DB)


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def search_args(*extra: str) -> list[str]:
    """A tiny pruning search that measures every trial (no profile to build first) and skips
    the plain alternatives (their own tests are in tests/optimize/test_alternatives.py)."""
    return [
        "search", "--model", "digits-cnn", "--target", "cpu", "--finetune-steps", "5",
        "--latency", "measured", "--methods", "prune", "--no-alternatives", "--quiet", *extra,
    ]  # fmt: skip


def test_profile_then_predicted_search_measures_its_front(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_cli(
        "profile", "--model", "digits-cnn", "--target", "cpu", "--methods", "prune", "--plans",
        "3", "--check", "2", "--quiet",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert re.fullmatch(
        r"within10=\d\.\d\d mape=\d+\.\d{3} spearman=-?\d\.\d\d n=2", out.splitlines()[-1]
    )
    profiles = list((workdir / "cache" / "profiles" / "digits-cnn").glob("*.json"))
    assert len(profiles) == 1 and str(profiles[0]) in out
    stamp = profiles[0].stat().st_mtime_ns

    timed: list[tuple[dict, float]] = []  # (plan, ratio) for each plan the verify step timed

    def time_plan(dense, plan, *args, **kwargs):
        measurement = real_time_plan(dense, plan, *args, **kwargs)
        timed.append((plan.to_dict(), measurement.ratio))
        return measurement

    real_time_plan = verify.time_plan
    monkeypatch.setattr(verify, "time_plan", time_plan)
    search = [a for a in search_args("--trials", "2", "--budget", "10ms") if a != "measured"]
    search.remove("--latency")
    code, out, err = run_cli(*search, capsys=capsys)
    assert code == 0, err
    assert profiles[0].stat().st_mtime_ns == stamp, "the cached profile is used, not rebuilt"
    code, out, _ = run_cli("show", "--study", "digits-cnn-cpu", "--json", capsys=capsys)
    front = json.loads(out)
    assert front
    for c in front:
        # Scored by the predictor, then built and timed by the verify step: the measured
        # figure is the verify step's timed ratio to the dense model, not the prediction.
        ratios = [ratio for plan, ratio in timed if plan == c["plan"]]
        assert len(ratios) == 1, "the verify step timed each front plan once"
        assert c["measured_ms"] == pytest.approx(ratios[0] * c["baseline_ms"])
        assert c["predicted_ms"] > 0 and c["measured_ms"] != c["predicted_ms"]
        assert c["latency_ms"] == c["measured_ms"]


def test_tiny_search_then_show_json(
    searched: tuple[Path, str], in_searched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = searched
    assert "Pareto front of study digits-cnn-cpu" in out
    assert (in_searched / STUDY_DB).is_file()
    assert (in_searched / "reports" / "digits-cnn-cpu" / "index.html").is_file()
    assert "report: reports/digits-cnn-cpu/index.html" in out

    code, out, _ = run_cli("show", "--study", "digits-cnn-cpu", "--json", capsys=capsys)
    assert code == 0
    front = json.loads(out)
    assert front, "a 3-trial search with a loose budget has a front"
    for c in front:
        assert set(c) >= SHOW_FIELDS
        assert c["feasible"] is True  # 10 ms is far above this model's latency
        assert c["measured_ms"] > 0 and c["baseline_ms"] > 0
        assert 0.0 <= c["accuracy"] <= 1.0
        assert c["plan"]["version"] == 1


def test_size_bytes_is_the_size_of_the_exported_model_file(
    in_searched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autocompress import Plan, apply, zoo
    from autocompress.compress.apply import deploy
    from autocompress.compress.program import deployable_program, save_program
    from autocompress.optimize.latency import batch_inputs

    _code, out, _ = run_cli("show", "--study", "digits-cnn-cpu", "--json", capsys=capsys)
    dense, task = zoo.load_model("digits-cnn"), zoo.load_task("digits-cnn")
    inputs = batch_inputs(task, 1)
    for c in json.loads(out):
        plan = Plan.from_dict(c["plan"])
        # Pruned float plans store dense float tensors: the bytes do not depend on the
        # fine-tuned values, so the plan applied again writes a file of the same size.
        model = deploy(apply(dense, plan, task.example_input), plan, inputs, [])
        path = tmp_path / f"{c['trial']}.pt2"
        save_program(deployable_program(model, inputs), path)
        assert abs(c["size_bytes"] - path.stat().st_size) <= 0.02 * path.stat().st_size


def test_same_study_twice_accumulates_trials(
    searched: tuple[Path, str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_study(searched, workdir)
    storage = f"sqlite:///{STUDY_DB}"
    before = optuna.load_study(study_name="digits-cnn-cpu", storage=storage).trials
    assert len(before) == 3
    assert run_cli(*search_args("--trials", "1"), capsys=capsys)[0] == 0
    after = optuna.load_study(study_name="digits-cnn-cpu", storage=storage).trials
    assert len(after) == 4
    assert [(t.params, t.values) for t in after[:3]] == [(t.params, t.values) for t in before]


def test_unreachable_budget_runs_and_marks_infeasible(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(*search_args("--trials", "2", "--budget", "1us"), capsys=capsys)
    assert code == 0
    assert "below anything this search space reaches" in err
    code, out, _ = run_cli("show", "--study", "digits-cnn-cpu", "--json", capsys=capsys)
    front = json.loads(out)
    assert front and all(c["feasible"] is False for c in front)
    assert all(c["violations"]["latency_ms"] > 0 for c in front)


def test_study_for_another_model_is_refused(
    searched: tuple[Path, str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_study(searched, workdir)
    before = (workdir / STUDY_DB).read_bytes()
    code, _, err = run_cli(
        "search", "--model", "digits-resnet", "--target", "cpu", "--study", "digits-cnn-cpu",
        "--quiet",
        capsys=capsys,
    )  # fmt: skip
    assert code == 2
    assert "study 'digits-cnn-cpu' was made for model 'digits-cnn'" in err
    assert (workdir / STUDY_DB).read_bytes() == before


def test_python_dash_m_and_models(workdir: Path) -> None:
    env = {**os.environ, "AUTOCOMPRESS_CACHE_DIR": str(workdir / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "autocompress", "models"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "digits-cnn" in proc.stdout and "digits-resnet" in proc.stdout


def test_targets_lists_every_target_and_whether_it_works_here(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("cpu ", "cpu:onnxruntime", "cpu:openvino", "cuda ", "cuda:onnxruntime"):
        assert name in out
    assert "installed" in out
