"""Shared by the zoo's pretrained entries: a valid cache entry is loaded, never retrained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import autocompress.zoo._registry as zoo_registry
from autocompress.zoo import ZOO, load_model
from autocompress.zoo._cache import save_weights, weights_path


def assert_loads_cached_weights_without_training(
    name: str, model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cache `model` as zoo entry `name`'s weights; `load_model(name)` must return them untrained.

    Args:
        name: a zoo name.
        model: a model of that entry's architecture, weights as they should come back.
        tmp_path: a private cache folder.
        monkeypatch: sets the cache folder and makes training fail the test.
    """
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path))
    entry = ZOO.get(name)
    save_weights(model, weights_path(entry.name, entry.version))

    def no_training(*args: object) -> None:
        raise AssertionError("load_model trained although the cache was valid")

    monkeypatch.setattr(zoo_registry, "_train_and_cache", no_training)
    loaded = load_model(name)
    assert not loaded.training
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
