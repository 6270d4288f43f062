"""The zoo: every entry's contract, the digits split, and load_model's train-once cache."""

from __future__ import annotations

import contextlib
import io
import pathlib

import numpy as np
import pytest
import torch

import autocompress.zoo._registry as zoo_registry
from autocompress.errors import UnknownNameError
from autocompress.zoo import ZOO, ZooEntry, cache_dir, load_model, load_task
from autocompress.zoo.digits import DigitsCNN, split_indices

CNN = "digits-cnn"


def cnn_path(root: pathlib.Path) -> pathlib.Path:
    return root / "zoo" / f"{CNN}-v{ZOO.get(CNN).version}.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """digits-cnn trained once into a fresh cache folder shared by this module's tests."""
    root = tmp_path_factory.mktemp("cache")
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
        mp.setenv("AUTOCOMPRESS_CACHE_DIR", str(root))
        model = load_model(CNN)
    return {"root": root, "model": model, "stderr": stderr.getvalue()}


# Trained classifiers; pretrained entries (minilm) have their own tests (tests/zoo/test_minilm.py).
CLASSIFIERS = [name for name in ZOO.names() if not ZOO.get(name).pretrained]


# Classifiers on text: a batch input is (token ids, attention mask), padded per batch.
TEXT_CLASSIFIERS = {"minilm-sentiment": 2}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_entry_contract(name: str) -> None:
    entry = ZOO.get(name)
    assert isinstance(entry, ZooEntry) and entry.name == name
    assert entry.description and "\n" not in entry.description
    task = load_task(name)
    assert task.metric_name == "top1"
    x, y = next(iter(task.train))
    classes = TEXT_CLASSIFIERS.get(name, 10)
    if name in TEXT_CLASSIFIERS:
        assert [t.shape[0] for t in x] == [len(y)] * 2 and all(t.dtype == torch.int64 for t in x)
    else:
        assert x.shape[1:] == task.example_input.shape[1:]
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < classes
    model = entry.build().eval()
    with torch.no_grad():
        assert model(*task.inputs()).shape == (1, classes)
    x_val, y_val = next(iter(task.val))
    x_few = tuple(t[:32] for t in x_val) if isinstance(x_val, tuple) else x_val[:32]
    few = [(x_few, y_val[:32])]  # the metric only iterates its loader
    assert 0.0 <= task.metric(model, few) <= 1.0  # type: ignore[arg-type]


def test_zoo_lists_the_digits_models() -> None:
    assert {"digits-cnn", "digits-resnet", "digits-lstm", "minilm"} <= set(ZOO.names())
    assert {"effnet-fmnist", "minilm-sentiment"} <= set(ZOO.names())


def test_split_is_disjoint_stratified_and_complete() -> None:
    train_idx, val_idx = split_indices()
    assert len(train_idx) + len(val_idx) == 1797
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert 0.28 < len(val_idx) / 1797 < 0.32
    for name in ZOO.names("digits-*"):
        task = load_task(name)
        assert len(task.train.dataset) == len(train_idx)
        assert len(task.val.dataset) == len(val_idx)
        val_labels = torch.cat([y for _, y in task.val])
        assert np.bincount(val_labels.numpy()).min() >= 50  # every class is validated


def test_val_loader_is_ordered_and_train_loader_shuffles() -> None:
    task = load_task(CNN)
    assert [y.tolist() for _, y in task.val] == [y.tolist() for _, y in task.val]
    assert task.train.batch_size == 64 and task.val.batch_size == 256


def test_first_load_trains_caches_and_is_accurate(trained: dict) -> None:
    path = cnn_path(trained["root"])
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    assert f"training {CNN} once, cached at {path}" in trained["stderr"]
    model = trained["model"]
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 14_458
    task = load_task(CNN)
    assert task.metric(model, task.val) >= 0.95


def test_second_load_reuses_the_cache(
    trained: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(trained["root"]))
    path = cnn_path(trained["root"])
    mtime = path.stat().st_mtime_ns

    def no_training(*args: object) -> None:
        raise AssertionError("load_model trained although the cache was valid")

    monkeypatch.setattr(zoo_registry, "_train_and_cache", no_training)
    model = load_model(CNN)
    assert path.stat().st_mtime_ns == mtime
    assert "training" not in capsys.readouterr().err
    assert not model.training
    x = load_task(CNN).example_input
    with torch.no_grad():
        assert torch.equal(model(x), trained["model"](x))


def test_garbage_cache_is_rebuilt_with_a_warning_and_training_is_deterministic(
    trained: dict, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    path = cnn_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00not a torch file\xff" * 10)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        model = load_model(CNN)
    task = load_task(CNN)
    assert task.metric(model, task.val) >= 0.95
    torch.load(path, weights_only=True)  # the rebuilt file is valid
    # Trained twice from scratch (fixture and here): the same weights.
    expected = trained["model"].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("damage", ["truncated", "wrong-shapes", "not-a-state-dict"])
def test_damaged_cache_is_detected_and_deleted(
    damage: str, trained: dict, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    path = cnn_path(tmp_path)
    path.parent.mkdir(parents=True)
    good = cnn_path(trained["root"]).read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "wrong-shapes":
        torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    else:
        torch.save([1, 2, 3], path)
    rebuilt: list[bool] = []

    def fake_train(entry: ZooEntry, task: object) -> torch.nn.Module:
        rebuilt.append(path.exists())
        return DigitsCNN().eval()

    monkeypatch.setattr(zoo_registry, "_train_and_cache", fake_train)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        load_model(CNN)
    assert rebuilt == [False]  # the damaged file was deleted before rebuilding


def test_unknown_name_lists_the_known_models() -> None:
    with pytest.raises(UnknownNameError, match=CNN):
        load_model("no-such-model")
    with pytest.raises(UnknownNameError, match=CNN):
        load_task("no-such-model")


def test_cache_dir_follows_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("AUTOCOMPRESS_CACHE_DIR")
    import platformdirs

    assert cache_dir() == pathlib.Path(platformdirs.user_cache_dir("autocompress"))
