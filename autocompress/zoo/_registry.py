"""The zoo registry: entries, and loading a trained model (train once, then from the cache)."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.registry import Registry
from autocompress.task import Task
from autocompress.zoo._cache import load_weights, save_weights, weights_path


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model together with the task that judges it.

    Args:
        name: the name users pass to ``--model`` ("digits-cnn").
        description: one line: what the model is and what its metric measures.
        build: returns the untrained architecture.
        task: builds the task (data loaders, example input, metric).
        train: trains a freshly built model in place, deterministically (fixed seed).
        version: bump to invalidate cached weights (architecture or training changed).
        pretrained: `build` returns the finished model (pretrained weights shipped in a
            package): it is neither trained nor cached.
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    task: Callable[[], Task]
    train: Callable[[nn.Module, Task], None]
    version: int = 1
    pretrained: bool = False


ZOO: Registry[ZooEntry] = Registry("model")


def register(entry: ZooEntry) -> ZooEntry:
    """Add `entry` to the zoo under its name.

    Args:
        entry: the entry; its name must not be registered yet.

    Returns:
        The same entry, so this can be used on a module-level constant.
    """
    return ZOO.register(entry.name)(entry)


def load_task(name: str) -> Task:
    """Build the task of a zoo model.

    Args:
        name: a zoo name.

    Returns:
        The task (loaders, example input, metric).

    Raises:
        UnknownNameError: `name` is not in the zoo; the message lists the known names.
    """
    return ZOO.get(name).task()


def load_model(name: str, *, task: Task | None = None) -> nn.Module:
    """Return a trained zoo model in eval mode, training and caching it on first use.

    Cached weights live in ``cache_dir() / "zoo" / "<name>-v<version>.pt"``. A cache file that
    cannot be loaded is reported with a warning, deleted and rebuilt.

    Args:
        name: a zoo name.
        task: the model's task, if the caller already built it (saves rebuilding the data
            when the model has to be trained); ignored when cached weights exist.

    Returns:
        The trained model, in eval mode, on the CPU.

    Raises:
        UnknownNameError: `name` is not in the zoo; the message lists the known names.
    """
    entry = ZOO.get(name)
    if entry.pretrained:
        return entry.build().eval()
    path = weights_path(entry.name, entry.version)
    if path.exists():
        model = entry.build()
        try:
            load_weights(model, path)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            warnings.warn(
                f"cached weights of {name!r} at {path} are corrupt ({reason}); "
                "deleting them and training again",
                RuntimeWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
        else:
            return model.eval()
    return _train_and_cache(entry, task)


def _train_and_cache(entry: ZooEntry, task: Task | None) -> nn.Module:
    path = weights_path(entry.name, entry.version)
    start = time.perf_counter()
    if task is None:  # first: missing data is bad input, reported before anything is announced
        task = entry.task()
    print(f"training {entry.name} once, cached at {path}", file=sys.stderr, flush=True)
    # A fixed seed for the initial weights too, without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = entry.build()
        entry.train(model, task)
    model.eval()
    save_weights(model, path)
    seconds = time.perf_counter() - start
    print(f"trained {entry.name} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return model
