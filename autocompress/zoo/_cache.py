"""Where trained zoo weights live in the cache folder, and how they are saved and loaded."""

from __future__ import annotations

import io
import pathlib

import torch
from torch import nn

from autocompress.cache import cache_dir, write_atomic


def weights_path(name: str, version: int) -> pathlib.Path:
    """The file that holds the trained weights of one zoo model.

    Args:
        name: the zoo name ("digits-cnn").
        version: the entry's version; a new version never reads an older file.

    Returns:
        ``cache_dir() / "zoo" / f"{name}-v{version}.pt"``.
    """
    return cache_dir() / "zoo" / f"{name}-v{version}.pt"


def load_weights(model: nn.Module, path: pathlib.Path) -> None:
    """Load a state_dict saved by `save_weights` into `model`, strictly.

    Args:
        model: the freshly built architecture; changed in place.
        path: the weights file.

    Raises:
        Exception: anything that makes the file unusable (truncated, not a torch file,
            missing or unexpected keys, wrong shapes).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"expected a state_dict, found {type(state).__name__}")
    model.load_state_dict(state, strict=True)


def save_weights(model: nn.Module, path: pathlib.Path) -> None:
    """Write `model`'s state_dict to `path` atomically (see `write_atomic`).

    Args:
        model: the trained model.
        path: the final file name; its folder is created if needed.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomic(path, buffer.getvalue())
