"""Where trained zoo weights live on disk, and how they are written without leaving half files."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile

import torch
from torch import nn

CACHE_ENV = "AUTOCOMPRESS_CACHE_DIR"


def cache_dir() -> pathlib.Path:
    """The root cache folder of autocompress (not created here).

    The zoo keeps its weights in the subfolder ``zoo`` of it; other parts of autocompress
    (latency profiles) may use other subfolders.

    Returns:
        ``$AUTOCOMPRESS_CACHE_DIR`` if that is set and not empty, else the platform's user
        cache folder for ``autocompress`` (e.g. ``~/.cache/autocompress`` on Linux).
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return pathlib.Path(override).expanduser()
    import platformdirs

    return pathlib.Path(platformdirs.user_cache_dir("autocompress"))


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


def write_atomic(path: pathlib.Path, payload: bytes) -> None:
    """Write bytes to `path` atomically.

    The bytes go to a temporary file in the same folder, which then replaces `path` in one
    step, so a run killed mid-write never leaves a half file under the final name.

    Args:
        path: the final file name; its folder is created if needed.
        payload: the file's content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise
