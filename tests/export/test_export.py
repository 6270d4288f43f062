"""`autocompress export` end to end on a tiny real study: the artifact, the picks, the refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

import autocompress
from autocompress.cli import main
from autocompress.config import Budget, Plan
from autocompress.export.rebuild import pick_note, select_trial
from autocompress.optimize.pareto import pareto_front
from autocompress.optimize.run import search
from autocompress.optimize.study import load_study
from autocompress.zoo import load_task
from tests.conftest import time_quickly

FILES = ["README.txt", "metrics.json", "model.onnx", "model.pt2", "plan.json"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A 3-trial search on digits-cnn (uniform pruning 0.875, 0.625, 0.375; 5 fine-tune steps),
    timed quickly: export's use of the figures is tested here, not their precision."""
    root = tmp_path_factory.mktemp("export")
    url = f"sqlite:///{root / 'studies.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the search's report goes under ./reports
        time_quickly(mp)
        search(
            "digits-cnn",
            trials=3,
            finetune_steps=5,
            budget=Budget(latency_ms=10.0),
            study="tiny",
            storage=url,
            train_threads=1,
            latency="measured",
            methods=["prune"],
            show_progress=False,
        )
    yield "tiny", url, root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("quick_timing")
def test_export_writes_an_artifact_that_reloads_and_matches_the_study(
    study: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    name, url, root = study
    out = root / "most-accurate"
    code, stdout, err = run_cli(
        capsys, "export", "--study", name, "--storage", url, "--pick", "most-accurate",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == FILES
    metrics = json.loads((out / "metrics.json").read_text())
    trial = load_study(name, url).trials[metrics["trial"]]
    assert f"exported trial {trial.number}" in stdout

    # The same seeded recipe rebuilds the same model: the accuracy is the study's.
    assert abs(metrics["accuracy"] - trial.user_attrs["accuracy"]) <= 0.005
    task = load_task("digits-cnn")
    model = autocompress.load(out)
    assert task.metric(model, task.val) == metrics["pt2_accuracy"]
    # On the study's target (ONNX Runtime) the accuracy is the runtime artifact's, as in the trial
    assert metrics["accuracy"] == metrics["runtime"]["accuracy"]
    assert metrics["outputs"]["passed"] and metrics["outputs"]["top1_agreement"] == 1.0
    assert metrics["latency_ms"] > 0 and metrics["measurement"]["ratio"] > 0

    # Sizes: the file as measured, its tensors no more than the study counted.
    assert metrics["artifact_bytes"] == (out / "model.pt2").stat().st_size
    assert metrics["size"]["unused_tensors"] == []
    assert metrics["size"]["tensor_bytes"] <= metrics["size_bytes"] == metrics["size_bytes_now"]
    within = abs(metrics["artifact_bytes"] - metrics["size_bytes"]) <= 0.02 * metrics["size_bytes"]
    assert metrics["size"]["within_2pct"] is within

    # plan.json replays on the dense model: same plan, same pruned parameter count.
    plan = Plan.from_dict(json.loads((out / "plan.json").read_text()))
    assert plan.to_dict() == trial.user_attrs["plan"]
    replayed = autocompress.apply(autocompress.zoo.load_model("digits-cnn"), plan, task.inputs())
    params = sum(p.numel() for p in replayed.parameters())
    assert params == trial.user_attrs["params"]

    # ONNX Runtime agrees with the reloaded PyTorch model.
    import onnxruntime as ort

    assert metrics["onnx"]["written"] and metrics["onnx"]["top1_agreement"] >= 0.99
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = next(iter(task.val))[0]
    onnx_out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(onnx_out, model(x), rtol=1e-4, atol=1e-4)
    assert "autocompress.load" in (out / "README.txt").read_text()


def test_pick_chooses_among_feasible_front_candidates(study: tuple[str, str, Path]) -> None:
    name, url, _ = study
    the_study = load_study(name, url)
    front = [c for c in pareto_front(the_study) if c["feasible"]]
    assert front
    fastest = select_trial(the_study, pick="fastest").number
    smallest = select_trial(the_study, pick="smallest").number
    accurate = select_trial(the_study, pick="most-accurate").number
    # No --max-drop: within the search's 1-point floor where a candidate is.
    held = [c for c in front if c["accuracy"] >= c["baseline_accuracy"] - 0.01] or front
    assert fastest == min(held, key=lambda c: c["measured_ms"])["trial"]
    assert smallest == min(held, key=lambda c: c["size_bytes"])["trial"]
    assert accurate == max(front, key=lambda c: c["accuracy"])["trial"]


@pytest.mark.usefixtures("quick_timing")
def test_export_fails_and_writes_nothing_when_the_rebuild_does_not_reproduce(
    study: tuple[str, str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autocompress.evaluate import finetune as finetune_module

    name, url, root = study
    the_study = load_study(name, url)
    # The most pruned plan (keep 0.375) recovers far more with 300 steps than with the 5 the
    # search used: a rebuild that differs from the study's must not pass as its candidate.
    pruned = min(the_study.trials, key=lambda t: t.user_attrs["params"])
    real = finetune_module.finetune
    monkeypatch.setattr(
        finetune_module, "finetune", lambda *a, steps, **k: real(*a, steps=300, **k)
    )
    code, _, err = run_cli(
        capsys, "export", "--study", name, "--storage", url, "--trial", str(pruned.number),
        "--out", str(root / "refused"),
    )  # fmt: skip
    assert code == 1
    assert "export verification failed" in err and "the study's is" in err
    assert not (root / "refused").exists()
    assert not list(root.glob(".refused*"))  # the temp folder is gone too


def test_export_input_errors_exit_2_with_one_line(
    study: tuple[str, str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name, url, _ = study
    base = ["export", "--storage", url]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = {
        "no study 'nope'": [*base, "--study", "nope", "--trial", "0", "--out", str(tmp_path / "a")],
        "has no trial 99": [*base, "--study", name, "--trial", "99", "--out", str(tmp_path / "b")],
        "exactly one of": [*base, "--study", name, "--out", str(tmp_path / "c")],
        "unknown pick": [*base, "--study", name, "--pick", "best", "--out", str(tmp_path / "d")],
        "not an empty folder": [*base, "--study", name, "--trial", "0", "--out", str(taken)],
        "cannot write under": [
            *base, "--study", name, "--trial", "0", "--out", str(taken / "keep.txt" / "x"),
        ],
    }  # fmt: skip
    for expected, argv in cases.items():
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (expected, err)
        assert expected in err and len(err.strip().splitlines()) == 1, err
    both = [*base, "--study", name, "--trial", "0", "--pick", "fastest", "--out", "x"]
    assert run_cli(capsys, *both)[0] == 2
    assert (taken / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.usefixtures("quick_timing")
def test_export_refuses_a_failed_trial_and_a_study_with_nothing_feasible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'tight.db'}"
    # 1 us cannot be met: the plan is measured, not fine-tuned, and marked infeasible.
    search(
        "digits-cnn", trials=1, finetune_steps=5, budget=Budget(latency_ms=0.001),
        study="tight", storage=url, train_threads=1, latency="measured", methods=["prune"],
        show_progress=False,
    )  # fmt: skip
    the_study = optuna.load_study(study_name="tight", storage=url)
    failed = the_study.ask()
    the_study.tell(failed, state=optuna.trial.TrialState.FAIL)
    out = str(tmp_path / "out")

    code, _, err = run_cli(
        capsys, "export", "--study", "tight", "--storage", url, "--pick", "fastest", "--out", out
    )
    assert code == 2 and "no candidate within its budgets" in err and "--trial N" in err
    code, _, err = run_cli(
        capsys, "export", "--study", "tight", "--storage", url, "--trial", str(failed.number),
        "--out", out,
    )  # fmt: skip
    assert code == 2 and "did not complete" in err
    assert not (tmp_path / "out").exists()


def test_pick_judges_latency_by_the_remeasured_figure_where_a_trial_has_one() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr(
        "baseline", {"accuracy": 0.99, "latency_ms": 2.0, "size_bytes": 1000, "params": 250}
    )
    study.set_user_attr("budget", {"latency_ms": 1.0, "size_bytes": None, "max_drop": None})

    def add(accuracy: float, latency_ms: float, measured_ms: float | None) -> int:
        attrs = {
            "accuracy": accuracy, "latency_ms": latency_ms, "latency_ratio": latency_ms / 2,
            "size_bytes": 500, "params": 10, "plan": {"version": 1, "layers": {}},
        }  # fmt: skip
        if measured_ms is not None:
            attrs["measured_ms"] = measured_ms
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, latency_ms, 500],
                user_attrs=attrs,
                constraints={"latency_ms": latency_ms - 1.0},
            )
        )
        return study.trials[-1].number

    add(0.98, 0.5, measured_ms=1.5)  # fast as searched, over budget when re-measured
    slower = add(0.985, 0.8, measured_ms=0.9)
    unmeasured = add(0.96, 0.95, measured_ms=None)
    assert select_trial(study, pick="fastest").number == slower
    assert select_trial(study, pick="most-accurate").number == slower
    assert select_trial(study, trial=unmeasured).number == unmeasured


def test_pick_without_max_drop_keeps_to_the_searchs_one_point_floor_where_it_can() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr(
        "baseline", {"accuracy": 0.99, "latency_ms": 2.0, "size_bytes": 1000, "params": 250}
    )
    study.set_user_attr("budget", {"latency_ms": 1.0, "size_bytes": None, "max_drop": None})

    def add(accuracy: float, latency_ms: float, size: int) -> None:
        attrs = {
            "accuracy": accuracy, "latency_ms": latency_ms, "latency_ratio": latency_ms / 2,
            "measured_ms": latency_ms, "size_bytes": size, "params": 10,
            "plan": {"version": 1, "layers": {}},
        }  # fmt: skip
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, latency_ms, size],
                user_attrs=attrs,
                constraints={"latency_ms": latency_ms - 1.0},
            )
        )

    add(0.42, 0.1, 100)  # on the front, within the budget, and no one would deploy it
    add(0.981, 0.4, 400)  # 0.9 points below the dense model
    add(0.99, 0.9, 900)
    assert select_trial(study, pick="fastest").number == 1
    assert select_trial(study, pick="smallest").number == 1
    assert select_trial(study, pick="most-accurate").number == 2
    # export says so: the pick was not the fastest of all
    assert pick_note(study, "fastest") == (
        "the study has no --max-drop: picked the fastest of the 2 candidates within 1 point of "
        "the dense accuracy, not of all 3 within its budgets (--trial N exports any of them)"
    )
    assert pick_note(study, "most-accurate") is None and pick_note(study, None) is None
    # With --max-drop the budget alone decides (here it allows a 60-point drop).
    study.set_user_attr("budget", {"latency_ms": 1.0, "size_bytes": None, "max_drop": 0.6})
    assert select_trial(study, pick="fastest").number == 0
    assert pick_note(study, "fastest") is None


def test_the_export_folder_gets_the_mode_of_an_ordinary_folder(tmp_path: Path) -> None:
    import os

    from autocompress.export.write import _prepare_out

    umask = os.umask(0o022)
    try:
        staging = _prepare_out(tmp_path / "deploy")
    finally:
        os.umask(umask)
    # It is renamed to --out when complete: 0755 under umask 022, not mkdtemp's 0700.
    assert staging.parent == tmp_path and staging.name.startswith(".deploy.")
    assert staging.stat().st_mode & 0o777 == 0o755


def test_a_staging_folder_left_by_a_killed_export_is_removed_by_the_next(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from autocompress.export.write import _prepare_out

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    killed = tmp_path / f".deploy.{gone.stdout.strip()}.abc123de"  # kill -9: nothing cleaned
    live = tmp_path / f".deploy.{os.getpid()}.def456gh"  # an export still running
    other = tmp_path / ".deploy.5.1.abcdefgh"  # an export to deploy.5: not ours to judge
    for folder in (killed, live, other):
        folder.mkdir()
        (folder / "model.pt2").write_bytes(b"partial")
    staging = _prepare_out(tmp_path / "deploy")
    assert not killed.exists()
    assert live.is_dir() and other.is_dir() and staging.is_dir()
    assert staging.name.startswith(f".deploy.{os.getpid()}.")


def test_export_replays_the_recipe_each_trial_was_scored_with(
    study: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A study continued with other --finetune-steps and --train-threads holds trials of both
    recipes; each is replayed with its own (threads too: float sums split across threads
    round differently)."""
    import shutil

    name, url, root = study
    copy = root / "continued.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    continued = f"sqlite:///{copy}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        search(
            "digits-cnn", trials=1, finetune_steps=3, budget=Budget(latency_ms=10.0),
            study=name, storage=continued, train_threads=2, latency="measured",
            methods=["prune"], show_progress=False, alternatives=False,
        )  # fmt: skip
    trials = load_study(name, continued).trials
    assert [t.user_attrs.get("finetune_steps") for t in trials] == [5, 5, 5, 3]
    assert [t.user_attrs.get("train_threads") for t in trials] == [1, 1, 1, 2]
    for number, steps, threads in ((0, 5, 1), (3, 3, 2)):
        out = root / f"trial-{number}"
        code, _, err = run_cli(
            capsys, "export", "--study", name, "--storage", continued, "--trial", str(number),
            "--out", str(out),
        )  # fmt: skip
        assert code == 0, err
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["finetune_steps"], metrics["train_threads"]) == (steps, threads)
        attrs = trials[number].user_attrs
        assert metrics["rebuilt_accuracy"] == attrs["candidate_accuracy"]
        assert metrics["accuracy"] == attrs["accuracy"], "the runtime's accuracy, replayed"


def test_an_export_that_loses_its_out_folder_to_another_says_so_and_keeps_nothing(
    study: tuple[str, str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autocompress.export import write

    name, url, root = study
    out = root / "contested"
    real = write._readme

    def other_export_fills_out(*args: object, **kwargs: object) -> str:
        out.mkdir(exist_ok=True)
        (out / "model.pt2").write_text("the other export's file\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(write, "_readme", other_export_fills_out)
    code, _, err = run_cli(
        capsys, "export", "--study", name, "--storage", url, "--trial", "0", "--out", str(out)
    )
    assert code == 2 and "was written by something else while this export ran" in err, err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["model.pt2"]  # the other export's, untouched
    assert not [p for p in root.iterdir() if p.name.startswith(".contested.")]  # no staging left
