"""Workers and crashes, with real processes: N workers fill one study with exactly the trials
asked for; a worker killed with SIGKILL mid-trial has its trial failed and retried on resume;
Ctrl-C records the running trial as failed and prints the command that resumes.

The PostgreSQL variant runs where AUTOCOMPRESS_TEST_POSTGRES names a database (CI starts one).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from autocompress.errors import UserInputError
from autocompress.optimize.workers import split_trials
from tests.conftest import time_quickly

REPO = Path(__file__).resolve().parents[2]
F = "tests.factories"
POSTGRES = os.environ.get("AUTOCOMPRESS_TEST_POSTGRES")
State = optuna.trial.TrialState


def _env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "AUTOCOMPRESS_CACHE_DIR": str(tmp_path / "cache")}


# Each trial is measured (no latency profile to build first: on these tiny models a profile
# costs more than the whole search) and the plain alternatives are skipped.
SEARCH = ["search", "--sampler", "random", "--methods", "prune", "--budget", "1s",
          "--train-threads", "1", "--latency", "measured", "--no-alternatives",
          "--quiet"]  # fmt: skip


def _search(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m autocompress search` in its own folder, on the tiny test models."""
    return subprocess.Popen(
        [sys.executable, "-m", "autocompress", *SEARCH, *args],
        cwd=tmp_path, env=_env(tmp_path), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_interruptible,
    )  # fmt: skip


def _search_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> None:
    """The same search run in this process, with quick timing: for the runs around the one
    whose process is killed, where what matters is what they leave in the study."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    time_quickly(monkeypatch)
    code = main([*SEARCH, *args])
    assert code == 0, capsys.readouterr().err


def _interruptible() -> None:
    """In the child: SIGINT raises KeyboardInterrupt even where the tests run with it ignored.

    A shell without job control starts background commands (`bash .ci/run &`) with SIGINT
    ignored; children inherit that, and Python then installs no KeyboardInterrupt handler.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _states(study: optuna.Study) -> collections.Counter[str]:
    return collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _wait_running(storage: str, name: str, proc: subprocess.Popen[str]) -> optuna.FrozenTrial:
    """The first trial of `name` that runs with a heartbeat, once it is well into its work."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            running = study.get_trials(deepcopy=False, states=(State.RUNNING,))
        except Exception:  # the study (or the file) is not created yet
            running = []
        # params too: a worker marks its trial before it suggests the plan
        if running and "worker" in running[0].user_attrs and running[0].params:
            time.sleep(1.5)  # into the fine-tune (every step sleeps)
            return optuna.load_study(study_name=name, storage=storage).trials[running[0].number]
        time.sleep(0.2)
    raise AssertionError("no trial started running within 180 s")


STORAGES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=pytest.mark.skipif(
            not POSTGRES, reason="set AUTOCOMPRESS_TEST_POSTGRES=postgresql://... (CI does)"
        ),
    ),
]


@pytest.mark.parametrize("kind", STORAGES)
def test_two_workers_fill_one_study_exactly(tmp_path: Path, kind: str) -> None:
    storage = POSTGRES if kind == "postgres" else f"sqlite:///{tmp_path / 'studies.db'}"
    assert storage is not None
    name = f"workers-{uuid.uuid4().hex[:8]}"
    asked = 5
    code, _out, err = _finish(
        _search(tmp_path, "--model", f"{F}:tiny_mlp", "--task", f"{F}:tiny_task",
                "--finetune-steps", "1", "--trials", str(asked), "--workers", "2",
                "--storage", storage, "--study", name)
    )  # fmt: skip
    assert code == 0, err
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert _states(study) == {"COMPLETE": asked}, "none lost, none left running or queued"
        assert sorted(t.number for t in trials) == list(range(asked)), "no number twice"
        per_worker = collections.Counter(t.user_attrs["worker"] for t in trials)
        assert sorted(per_worker.values()) == [2, 3], "the 5 trials split between 2 workers"
        warm = [t for t in trials if "warm_start" in t.user_attrs]
        assert warm and len({tuple(sorted(t.params.items())) for t in warm}) == len(warm), (
            "each queued warm start was taken by exactly one worker"
        )
    finally:
        if kind == "postgres":
            optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.skipif(not POSTGRES, reason="set AUTOCOMPRESS_TEST_POSTGRES=postgresql://...")
def test_separate_searches_share_one_postgres_study(tmp_path: Path) -> None:
    """What runs on each of several machines: the same search, its own seed, one storage."""
    assert POSTGRES is not None
    name = f"machines-{uuid.uuid4().hex[:8]}"
    procs = [
        _search(tmp_path, "--model", f"{F}:tiny_mlp", "--task", f"{F}:tiny_task",
                "--finetune-steps", "1", "--trials", "3", "--seed", str(seed),
                "--storage", POSTGRES, "--study", name)
        for seed in (1, 2)
    ]  # fmt: skip
    try:
        for proc in procs:
            code, _out, err = _finish(proc)
            assert code == 0, err
        study = optuna.load_study(study_name=name, storage=POSTGRES)
        trials = study.get_trials(deepcopy=False)
        assert _states(study) == {"COMPLETE": 6}
        assert sorted(t.number for t in trials) == list(range(6))
        per_machine = collections.Counter(t.user_attrs["worker"] for t in trials)
        assert sorted(per_machine.values()) == [3, 3], "each search ran its own --trials"
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES)


def test_killed_worker_trial_is_failed_and_retried_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, name = f"sqlite:///{tmp_path / 'studies.db'}", "crash"
    common = ["--model", f"{F}:slow_mlp", "--task", f"{F}:tiny_task", "--storage", storage,
              "--study", name, "--heartbeat", "1"]  # fmt: skip
    # a quick trial (no fine-tune steps, so no sleeping), then one that is killed mid-trial
    _search_here(tmp_path, monkeypatch, capsys, *common, "--finetune-steps", "0", "--trials", "1")
    done = optuna.load_study(study_name=name, storage=storage).trials[0]
    ((param, distribution),) = done.distributions.items()  # tiny_mlp has one knob
    fresh = next(c for c in distribution.choices if c != done.params[param])
    # queue a plan not scored yet, so the next run fine-tunes (a scored plan is told again)
    optuna.load_study(study_name=name, storage=storage).enqueue_trial({param: fresh})
    proc = _search(tmp_path, *common, "--finetune-steps", "400", "--trials", "1")
    killed = _wait_running(storage, name, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    study = optuna.load_study(study_name=name, storage=storage)
    before = {t.number: t.values for t in study.get_trials(states=(State.COMPLETE,))}
    assert _states(study) == {"COMPLETE": 1, "RUNNING": 1}

    time.sleep(3)  # past the 2 s grace period: the killed worker's heartbeat is now stale
    # resumed by a new search (in this process: the killed one was a real process)
    _search_here(tmp_path, monkeypatch, capsys, *common, "--finetune-steps", "0", "--trials", "1")
    study = optuna.load_study(study_name=name, storage=storage)
    after = {t.number: t.values for t in study.get_trials(states=(State.COMPLETE,))}
    dead = study.trials[killed.number]
    assert dead.state == State.FAIL
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1
    assert retries[0].state == State.COMPLETE and retries[0].params == killed.params
    assert retries[0].system_attrs["failed_trial"] == killed.number
    assert all(after[n] == v for n, v in before.items()), "no completed trial lost or changed"
    assert len(after) == len(before) + 1, "the resumed run's one trial is the retry"
    assert _states(study) == {"COMPLETE": 2, "FAIL": 1}

    assert main(["show", "--study", name, "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert f"#{killed.number}: its worker stopped sending heartbeats" in out
    assert f"(retried as #{retries[0].number})" in out


def test_ctrl_c_records_the_trial_and_prints_the_resume_command(tmp_path: Path) -> None:
    storage, name = f"sqlite:///{tmp_path / 'studies.db'}", "stopped"
    proc = _search(tmp_path, "--model", f"{F}:slow_mlp", "--task", f"{F}:tiny_task",
                   "--storage", storage, "--study", name, "--finetune-steps", "400",
                   "--trials", "3")  # fmt: skip
    running = _wait_running(storage, name, proc)
    proc.send_signal(signal.SIGINT)
    code, _out, err = _finish(proc, timeout=60)
    assert code == 130, err
    resume = err.split("Resume with: ", 1)[1].strip()
    assert resume.startswith(f"autocompress search --model {F}:slow_mlp --study {name} ")
    assert resume.endswith(" --trials N")
    # Every flag that shapes the trials comes back, so the resumed trials are scored the same.
    for flag in (
        f"--task {F}:tiny_task", f"--storage {storage}", "--methods prune", "--budget 1s",
        "--finetune-steps 400", "--sampler random", "--train-threads 1", "--latency measured",
        "--no-alternatives",
    ):  # fmt: skip
        assert f" {flag} " in f" {resume} ", (flag, resume)
    assert "--quiet" not in resume and "--trials 3" not in resume
    study = optuna.load_study(study_name=name, storage=storage)
    # one warm start still queued; the last of 3 trials was left to the polisher
    assert _states(study) == {"FAIL": 1, "WAITING": 1}
    assert study.trials[running.number].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"


def test_split_trials_never_lists_more_workers_than_trials_or_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert split_trials(7, 3) == [3, 2, 2]
    assert split_trials(3, 8) == [1, 1, 1]
    with pytest.raises(
        UserInputError, match=r"--workers must be at most 8 \(one per core here\), got 9"
    ):
        split_trials(3, 9)
    with pytest.raises(UserInputError, match="got 100000000"):
        split_trials(3, 100_000_000)  # instantly, without a list as long
