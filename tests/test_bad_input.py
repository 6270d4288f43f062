"""Bad input, one row each: exit code 2, one line on stderr naming the problem, nothing on disk
changed (a study database and a cache file exist beforehand and must stay byte-identical)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autocompress.cli import _parser, main

F = "tests.factories"
TINY = ["--model", f"{F}:tiny_mlp", "--task", f"{F}:tiny_task"]

SPACES = {
    "unknown-key.yaml": "version: 1\nrulez: []\n",
    "wrong-type.yaml": "version: 1\ndefaults:\n  keep_ratio: 0.5\n",
    "empty-choices.yaml": "version: 1\ndefaults:\n  keep_ratio: []\n",
    "no-layer.yaml": (
        "version: 1\ndefaults:\n  keep_ratio: [1.0, 0.5]\n"
        "rules:\n  - match: {name: 'encoder.*'}\n    keep_ratio: [1.0]\n"
    ),
    "broken.yaml": "version: 1\ndefaults: [keep_ratio: {\n",
}

ROWS = [
    (["search", "--budget", "50parsecs"], "unknown unit 'parsecs' in --budget"),
    (["search", "--budget=-3ms"], "--budget must be positive"),
    (["search", "--budget", "0ms"], "--budget must be positive"),
    (["search", "--max-size", "5 furlongs"], "unknown unit 'furlongs' in --max-size"),
    (["search", "--max-size", "0MB"], "--max-size must be positive"),
    (["search", "--max-drop", "1 point"], "unknown unit 'point' in --max-drop"),
    (["search", "--trials", "0"], "--trials must be at least 1"),
    (["search", "--workers", "0"], "--workers must be at least 1"),
    (["search", "--workers", "100000000"], "--workers must be at most"),
    (["search", "--storage", "sqlite:///file:reports/autocompress.db?mode=ro&uri=true",
      "--study", "mine", "--model", "digits-cnn"],
     "cannot be written (attempt to write a readonly database)"),
    (["search", "--finetune-steps", "-1"], "--finetune-steps must be 0 or more"),
    (["search", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["search", "--train-threads", "0"], "--train-threads must be at least 1, got 0"),
    (["search", "--model", "no-such-model"], "unknown model 'no-such-model'; choose one of:"),
    (["search", *TINY[:2], "--task", "no-such-task"], "unknown task 'no-such-task'"),
    (["search", *TINY[:2]], "needs --task pkg.module:factory"),
    (["search", "--target", "tpu"], "unknown target 'tpu'; choose one of: cpu"),
    (["search", "--sampler", "grid"], "unknown sampler 'grid'; choose one of: nsga2"),
    (["search", "--model", f"{F}:raises"], "raised FileNotFoundError: weights.pt not found"),
    (["search", "--model", f"{F}:not_a_module"], "returned dict, not a torch.nn.Module"),
    (["search", "--model", "no_such_pkg.models:make"], "cannot import 'no_such_pkg.models'"),
    (["search", "--model", "full"], "model folder 'full' has no config.json"),
    (["search", "--model", f"{F}:tiny_mlp", "--task", f"{F}:wrong_shape_task"],
     "cannot run on the example input of task 'wrong-shape' (shape (1, 5))"),
    (["search", "--model", f"{F}:tiny_mlp", "--task", f"{F}:empty_val_task"],
     "task 'empty-val' has an empty validation set"),
    (["search", *TINY, "--space", "unknown-key.yaml"], "unknown key 'rulez'"),
    (["search", *TINY, "--space", "wrong-type.yaml"], "expected a non-empty list of choices"),
    (["search", *TINY, "--space", "empty-choices.yaml"], "expected a non-empty list of choices"),
    (["search", *TINY, "--space", "no-layer.yaml"], "rule with name 'encoder.*' matches no layer"),
    (["search", *TINY, "--space", "broken.yaml"], "broken.yaml: not valid YAML"),
    (["search", "--space", "missing.yaml"], "search space 'missing.yaml' not found"),
    (["search", *TINY, "--storage", "postgresql://nobody@127.0.0.1:1/x"],
     "cannot open storage 'postgresql://nobody@127.0.0.1:1/x'"),
    (["search", *TINY, "--storage", "nosuchdb://x"], "cannot open storage 'nosuchdb://x'"),
    (["show", "--study", "mine", "--storage", "sqlite:///afile"],
     "cannot open storage 'sqlite:///afile': (sqlite3.DatabaseError) file is not a database"),
    (["search", "--model", "digits-resnet", "--study", "mine"],
     "study 'mine' was made for model 'digits-cnn', not 'digits-resnet'"),
    (["show", "--study", "nope"], "no study 'nope'"),
    (["show", "--study", "s", "--storage", "postgresql://me:secret@127.0.0.1:1/x"],
     "cannot open storage 'postgresql://me:***@127.0.0.1:1/x'"),
    (["report", "--study", "mine", "--out", "afile/report"], "cannot write the report to"),
]  # fmt: skip

EXPORT_ROWS = [
    (["export", "--study", "mine", "--trial", "99", "--out", "out"], "no trial 99"),
    (["export", "--study", "mine", "--trial", "0", "--out", "full"], "not an empty folder"),
    (["export", "--study", "mine", "--trial", "0", "--out", "afile/out"], "afile"),
]
has_export = "export" in _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a study 'mine' (for digits-cnn) in the default storage, a cached weights
    file, a file where an output folder is asked for, a non-empty folder and bad space files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "reports").mkdir()
    storage = f"sqlite:///{tmp_path / 'reports' / 'autocompress.db'}"
    study = optuna.create_study(study_name="mine", storage=storage, directions=["maximize"] * 3)
    study.set_user_attr("identity", {"model": "digits-cnn", "target": "cpu"})
    figures = {"accuracy": 0.9, "latency_ms": 0.1, "latency_ratio": 0.9, "size_bytes": 1000}
    study.add_trial(  # trial 0, complete: export gets as far as checking its --out
        optuna.trial.create_trial(
            values=[0.9, 0.1, 1000],
            user_attrs={**figures, "params": 250, "plan": {"version": 1, "layers": {}}},
        )
    )
    (tmp_path / "cache" / "zoo").mkdir(parents=True)
    (tmp_path / "cache" / "zoo" / "digits-cnn-v1.pt").write_bytes(b"cached weights")
    (tmp_path / "afile").write_text("a file where a folder is expected\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("already here\n")
    for name, text in SPACES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _check(workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str):
    before = _snapshot(workdir)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("autocompress: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(workdir) == before


@pytest.mark.parametrize(("argv", "message"), ROWS, ids=[" ".join(r[0])[:60] for r in ROWS])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _check(workdir, capsys, argv, message)


@pytest.mark.skipif(not has_export, reason="the export command is not in this build yet")
@pytest.mark.parametrize(("argv", "message"), EXPORT_ROWS)
def test_bad_export_exits_2(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _check(workdir, capsys, argv, message)


def test_unknown_model_lists_zoo(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--model", "resnet9000"]) == 2
    err = capsys.readouterr().err
    assert "digits-cnn" in err and "digits-resnet" in err


class _Planted:
    """Unpickling this would create a file: the proof that a pickle ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cache_loads_weights_only_and_never_runs_code(tmp_path: Path) -> None:
    from autocompress.zoo._cache import load_weights
    from tests.factories import tiny_mlp

    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pt"
    with path.open("wb") as f:
        pickle.dump({"fc1.weight": _Planted(str(marker))}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_weights(tiny_mlp(), path)
    assert not marker.exists()


def test_space_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    from autocompress.errors import SpaceError
    from autocompress.space.spec import load_space

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"version: 1\ndefaults: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)
    assert not marker.exists()


def test_plan_json_allows_only_known_keys_and_types() -> None:
    from autocompress.config import Plan
    from autocompress.errors import PlanError

    with pytest.raises(PlanError, match="unknown plan key"):
        Plan.from_dict({"version": 1, "layers": {}, "__class__": "os.system"})
    with pytest.raises(PlanError):
        Plan.from_dict({"version": 1, "layers": {"fc1": {"keep_ratio": "__import__('os')"}}})
    with pytest.raises(PlanError, match="unknown setting"):
        Plan.from_dict({"version": 1, "layers": {"fc1": {"exec": "print(1)"}}})


@pytest.mark.parametrize(
    ("target", "hidden", "install"),
    [
        ("cpu:onnxruntime", "onnxruntime", "pip install 'autocompress[onnx]'"),
        ("cpu:openvino", "openvino", "pip install 'autocompress[openvino]'"),
    ],
)
def test_a_runtime_target_that_is_not_installed_says_how_to_install_it(
    tmp_path: Path, target: str, hidden: str, install: str
) -> None:
    # A None entry in sys.modules makes `import` fail as if the package were not installed.
    code = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        "from autocompress.cli import main\n"
        f"sys.exit(main(['search', '--target', {target!r}, '--storage', "
        f"'sqlite:///{tmp_path}/x.db']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"autocompress: error: --target {target} needs {hidden}")
    assert install in lines[0]
    assert not (tmp_path / "x.db").exists()


EMPTY_FOLDER_ROWS = [
    (["search", "--model", f"{F}:tiny_mlp", "--task", f"{F}:broken_metric_task"],
     "the metric of task 'broken-metric' raised on the dense model: KeyError: 'label'"),
    (["search", *TINY, "--methods", "foo"], "unknown method 'foo' in --methods"),
    (["search", *TINY, "--methods", ""], "--methods names no method"),
    (["search", *TINY, "--space", "broken.yaml"], "broken.yaml: not valid YAML"),
    (["search", *TINY, "--seed", "-1"], "--seed must be in 0 .. 4294967295, got -1"),
    (["search", *TINY, "--seed", "4294967296"], "--seed must be in 0 .. 4294967295"),
    (["search", *TINY, "--timeout", "-5"], "--timeout must be a positive number of seconds"),
    (["search", *TINY, "--timeout", "nan"], "--timeout must be a positive number of seconds"),
    (["search", *TINY, "--max-drop", "150%"], "--max-drop must be below 100%"),
    (["search", *TINY, "--heartbeat", "-1"], "--heartbeat must be at least 1 second, got -1"),
    (["search", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["show", "--study", "x"], "no study 'x' in sqlite:///reports/autocompress.db; the file does"),
    (["show", "--study", "x", "--storage", "sqlite:///new/dir/x.db"], "the file does not exist"),
    (["report", "--study", "x"], "no study 'x' in sqlite:///reports/autocompress.db"),
    (["search", *TINY, "--storage", "sqlite:///broken.yaml/x.db"],
     "cannot open storage 'sqlite:///broken.yaml/x.db': cannot create its folder"),
    (["search", "--model", f"{F}:exits", "--task", f"{F}:tiny_task"],
     f"model factory '{F}:exits' called sys.exit(0); it must return a torch.nn.Module"),
    (["search", *TINY, "--space", "alias-bomb.yaml"], "alias-bomb.yaml: YAML aliases are not"),
    (["search", "--model", f"{F}:nan_mlp", "--task", f"{F}:tiny_task"],
     "gives NaN or infinite outputs on the example input of task 'tiny'"),
    (["search", *TINY, "--space", "latin1.yaml"], "latin1.yaml: not UTF-8 text"),
    (["search", *TINY, "--space", "long-value.yaml"], "expected a non-empty list of choices, got"),
]  # fmt: skip

# A few hundred bytes that expand to gigabytes through nested aliases.
ALIAS_BOMB = "version: 1\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("argv", "message"), EMPTY_FOLDER_ROWS, ids=[" ".join(r[0])[:50] for r in EMPTY_FOLDER_ROWS]
)
def test_bad_search_input_in_an_empty_folder_creates_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    """Refused before a storage is opened or created: no `reports/autocompress.db` (nor any
    folder) is left behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "broken.yaml").write_text(SPACES["broken.yaml"])
    (tmp_path / "alias-bomb.yaml").write_text(ALIAS_BOMB)
    (tmp_path / "latin1.yaml").write_bytes("version: 1\n# caf\xe9\n".encode("latin-1"))
    (tmp_path / "long-value.yaml").write_text(
        f"version: 1\ndefaults:\n  keep_ratio: {'x' * 5000}\n"
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("autocompress: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and len(err) < 400, err
    assert sorted(p.name for p in tmp_path.iterdir()) == files


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--trials", "x"], "argument --trials: invalid int value: 'x'; see "
         "'autocompress search --help'"),
        (["serch"], "invalid choice: 'serch'"),
        (["show", "--study", "x", "--nope"], "unrecognized arguments: --nope"),
        (["show"], "the following arguments are required: --study"),
    ],
)  # fmt: skip
def test_option_parsing_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("autocompress: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_databases_autocompress_does_not_own_are_refused_and_left_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    other = tmp_path / "app.db"  # another application's database, with a `studies` table
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, title TEXT)")
    plain = f"sqlite:///{tmp_path / 'plain.db'}"  # a study made with plain Optuna
    optuna.create_study(study_name="theirs", storage=plain).add_trial(
        optuna.trial.create_trial(value=1.0)
    )
    cases = [
        (["show", "--study", "s", "--storage", f"sqlite:///{other}"],
         "is another application's database (tables: studies)"),
        (["search", *TINY, "--study", "s", "--storage", f"sqlite:///{other}"],
         "is another application's database"),
        (["show", "--study", "theirs", "--storage", plain], "was not made by autocompress"),
        (["report", "--study", "theirs", "--storage", plain], "was not made by autocompress"),
        (["search", *TINY, "--study", "theirs", "--storage", plain],
         "study 'theirs' was not made by autocompress"),
    ]  # fmt: skip
    for argv, message in cases:
        before = _snapshot(tmp_path)
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert _snapshot(tmp_path) == before, argv


def test_the_largest_seed_continues_a_study_with_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sampler's seed is the user's plus the trials so far: it wraps at 2**32 instead of
    failing with a traceback on a study that already has trials."""
    from tests.conftest import time_quickly

    monkeypatch.chdir(tmp_path)
    time_quickly(monkeypatch)
    argv = [
        "search", *TINY, "--seed", "4294967295", "--trials", "1", "--finetune-steps", "1",
        "--latency", "measured", "--no-alternatives", "--methods", "prune", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert main(argv) == 0, capsys.readouterr().err
    storage = f"sqlite:///{tmp_path / 'reports' / 'autocompress.db'}"
    study = optuna.load_study(study_name="tiny_mlp-cpu:onnxruntime", storage=storage)
    assert len(study.trials) == 2


@pytest.mark.parametrize("command", ["show", "report"])
def test_a_trial_whose_figures_are_not_numbers_is_refused_by_name(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A study edited outside autocompress (a figure stored as a string): one line naming the
    trial and the attribute, exit 2, nothing written (no report folder either)."""
    storage = f"sqlite:///{workdir / 'reports' / 'autocompress.db'}"
    study = optuna.create_study(study_name="edited", storage=storage, directions=["maximize"] * 3)
    study.set_user_attr("identity", {"model": "digits-cnn", "target": "cpu"})
    dense = {"accuracy": 0.95, "latency_ms": 0.2, "size_bytes": 2000, "params": 500}
    study.set_user_attr("baseline", dense)
    figures = {"accuracy": "0.9", "latency_ms": 0.1, "latency_ratio": 0.5, "size_bytes": 1000}
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.9, 0.1, 1000],
            user_attrs={**figures, "params": 250, "plan": {"version": 1, "layers": {}}},
        )
    )
    message = "trial 0 of study 'edited' holds accuracy='0.9', not a number"
    _check(workdir, capsys, [command, "--study", "edited"], message)
