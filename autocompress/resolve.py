"""One place that turns `--model` and `--task` strings into objects."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from autocompress.errors import UserInputError
from autocompress.task import Task


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to search, with the task that judges it (None when the user must give one)."""

    name: str
    model: nn.Module
    task: Task | None


def _call_factory(spec: str, what: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserInputError(f"{what} {spec!r} is not of the form pkg.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserInputError(f"cannot import {module_name!r} for {what} {spec!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserInputError(f"{what} {spec!r}: {module_name} has no callable {attr!r}")
    try:
        return factory()
    except Exception as exc:  # a user's factory can fail in any way; say which and how
        raise UserInputError(f"{what} factory {spec!r} raised {type(exc).__name__}: {exc}") from exc


def model_label(spec: str | nn.Module) -> str:
    """The name a model goes by in study names and reports, without loading it."""
    if isinstance(spec, nn.Module):
        return type(spec).__name__
    return spec.partition(":")[2] if ":" in spec else spec


def resolve_model(spec: str | nn.Module) -> ResolvedModel:
    """Resolve `--model`: a zoo name, a `pkg.mod:factory` returning an nn.Module, or a module.

    Returns:
        The model (eval mode) and, for zoo models, its task.

    Raises:
        UserInputError: unknown name (listing the zoo), bad factory, or not an nn.Module.
    """
    from autocompress import zoo

    if isinstance(spec, nn.Module):
        return ResolvedModel(model_label(spec), spec.eval(), None)
    if ":" in spec:
        model = _call_factory(spec, "model")
        if not isinstance(model, nn.Module):
            raise UserInputError(
                f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
            )
        return ResolvedModel(model_label(spec), model.eval(), None)
    if spec not in zoo.ZOO:
        known = ", ".join(zoo.ZOO.names())
        raise UserInputError(
            f"unknown model {spec!r}; choose one of: {known} (or give pkg.module:factory)"
        )
    return ResolvedModel(spec, zoo.load_model(spec), zoo.load_task(spec))


def resolve_task(spec: str | Task | None, model: ResolvedModel) -> Task:
    """Resolve `--task`: a zoo task name, a `pkg.mod:factory` returning a Task, or the model's own.

    Raises:
        UserInputError: no task for a model outside the zoo, unknown name, or bad factory.
    """
    from autocompress import zoo

    if isinstance(spec, Task):
        return spec
    if spec is None:
        if model.task is None:
            raise UserInputError(
                f"model {model.name!r} is not from the zoo, so it needs --task pkg.module:factory "
                "returning an autocompress.Task"
            )
        return model.task
    if ":" in spec:
        task = _call_factory(spec, "task")
        if not isinstance(task, Task):
            raise UserInputError(
                f"task factory {spec!r} returned {type(task).__name__}, not an autocompress.Task"
            )
        return task
    if spec not in zoo.ZOO:
        raise UserInputError(
            f"unknown task {spec!r}; choose one of: {', '.join(zoo.ZOO.names())} "
            "(or give pkg.module:factory)"
        )
    return zoo.load_task(spec)


def check_task_fits(name: str, model: nn.Module, task: Task) -> None:
    """Fail early, with the reason, when the task's data cannot judge the model.

    Runs the model once on the example input and on one validation batch (no gradients).

    Raises:
        UserInputError: an empty validation or training set, or data the model cannot take.
    """
    import torch

    splits = {"val": "validation", "train": "training"}
    with torch.random.fork_rng(devices=[]):  # a shuffling loader draws from the global RNG
        first = {split: next(iter(getattr(task, split)), None) for split in splits}
    for split, words in splits.items():
        if first[split] is None:
            raise UserInputError(
                f"task {task.name!r} has an empty {words} set; give it at least one batch"
            )
    batch = first["val"]
    inputs = batch[0] if isinstance(batch, tuple | list) else batch  # batches are (x, y)
    checks = {"example input": task.example_input, "validation data": inputs}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for what, x in checks.items():
                try:
                    model(*x) if isinstance(x, tuple | list) else model(x)
                except Exception as exc:
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    detail = " ".join(str(exc).split())[:200]
                    raise UserInputError(
                        f"model {name!r} cannot run on the {what} of task {task.name!r} (shape "
                        f"{shape}): {type(exc).__name__}: {detail}; give a task whose data fits"
                    ) from None
    finally:
        model.train(was_training)
