"""The user cache folder of autocompress, and how files in it are written without leaving half
files.

The zoo keeps trained weights there, the latency layer its profiles, the evaluation its
sensitivities: each in a subfolder of `cache_dir()`.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

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
