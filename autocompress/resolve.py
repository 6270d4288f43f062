"""One place that turns `--model` and `--task` strings into objects."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.errors import UserInputError
from autocompress.task import Task


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to search, with the task that judges it (None when the user must give one).

    `default_task` builds the task used when none is given and the model has none of its own
    (a Hugging Face folder: the standard-library docstring embedding task with its tokenizer).
    """

    name: str
    model: nn.Module
    task: Task | None
    default_task: Callable[[], Task] | None = None


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
    except SystemExit as exc:  # exiting inside a factory must not end the search silently
        raise UserInputError(
            f"{what} factory {spec!r} called sys.exit({exc.code!r}); it must return a "
            f"{'torch.nn.Module' if what == 'model' else 'value'} instead"
        ) from None
    except Exception as exc:  # a user's factory can fail in any way; say which and how
        raise UserInputError(f"{what} factory {spec!r} raised {type(exc).__name__}: {exc}") from exc


def model_label(spec: str | nn.Module) -> str:
    """The name a model goes by in study names and reports, without loading it."""
    if isinstance(spec, nn.Module):
        return type(spec).__name__
    if _is_folder(spec):
        return Path(spec).resolve().name
    return spec.partition(":")[2] if ":" in spec else spec


def _is_folder(spec: str) -> bool:
    return Path(spec).is_dir()


def _resolve_folder(spec: str) -> ResolvedModel:
    """A Hugging Face model folder: its AutoModel as a sentence embedder (mean pooling)."""
    from autocompress.zoo.text import is_hf_folder

    if not is_hf_folder(spec):
        raise UserInputError(
            f"model folder {spec!r} has no config.json; give a Hugging Face model folder "
            "(config.json and weights, as save_pretrained writes it)"
        )
    try:
        from autocompress.zoo.text import MAX_TOKENS, SentenceEmbedder, load_encoder
    except ImportError:
        raise UserInputError(
            f"model folder {spec!r} needs transformers; install it with: "
            "pip install -c constraints.txt -e '.[transformers]'"
        ) from None
    try:
        model = SentenceEmbedder(load_encoder(spec))
    except Exception as exc:  # transformers explains what the folder lacks
        detail = " ".join(str(exc).split())[:200]
        raise UserInputError(
            f"cannot load model folder {spec!r} with transformers.AutoModel: "
            f"{type(exc).__name__}: {detail}; give a folder save_pretrained wrote"
        ) from None

    positions = getattr(getattr(model.encoder, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions < MAX_TOKENS:
        raise UserInputError(
            f"model folder {spec!r} takes at most {positions} tokens (max_position_embeddings) "
            f"and its sentence task uses {MAX_TOKENS}; give a model with at least {MAX_TOKENS} "
            "positions"
        )

    def docstring_task() -> Task:
        from autocompress.zoo.minilm import docstring_task

        return docstring_task(model, spec)

    return ResolvedModel(model_label(spec), model.eval(), None, docstring_task)


def resolve_model(spec: str | nn.Module) -> ResolvedModel:
    """Resolve `--model`: a zoo name, a `pkg.mod:factory` returning an nn.Module, a Hugging Face
    model folder (`transformers.AutoModel`, offline; searched as a sentence embedder with mean
    pooling), or a module.

    Returns:
        The model (eval mode) and, for zoo models, its task.

    Raises:
        UserInputError: unknown name (listing the zoo), bad factory, or not an nn.Module.
    """
    from autocompress import zoo

    if isinstance(spec, nn.Module):
        return ResolvedModel(model_label(spec), spec.eval(), None)
    if _is_folder(spec):
        return _resolve_folder(spec)
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
        if model.task is None and model.default_task is not None:
            return model.default_task()
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


def _finite(out: Any) -> bool:
    """True when every float tensor in a model's output (tensor, tuple, dict) is finite."""
    import torch

    if isinstance(out, torch.Tensor):
        return not out.is_floating_point() or bool(torch.isfinite(out).all())
    if isinstance(out, dict) or (hasattr(out, "values") and callable(out.values)):
        return all(_finite(v) for v in out.values())
    if isinstance(out, tuple | list):
        return all(_finite(v) for v in out)
    return True


def check_task_fits(name: str, model: nn.Module, task: Task) -> None:
    """Fail early, with the reason, when the task's data cannot judge the model.

    Runs the model once on the example input and on one validation batch, and the task's
    metric on that batch (no gradients).

    Raises:
        UserInputError: an empty validation or training set, data the model cannot take,
            outputs that are not finite (NaN weights), or a metric that raises.
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
                    out = model(*x) if isinstance(x, tuple | list) else model(x)
                except Exception as exc:
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    detail = " ".join(str(exc).split())[:200]
                    raise UserInputError(
                        f"model {name!r} cannot run on the {what} of task {task.name!r} (shape "
                        f"{shape}): {type(exc).__name__}: {detail}; give a task whose data fits"
                    ) from None
                if not _finite(out):
                    raise UserInputError(
                        f"model {name!r} gives NaN or infinite outputs on the {what} of task "
                        f"{task.name!r}; check its weights (every front would be meaningless)"
                    )
            try:  # the metric on one validation batch: a metric that raises says so here
                task.metric(model, [batch])
            except Exception as exc:
                detail = " ".join(str(exc).split())[:200]
                raise UserInputError(
                    f"the metric of task {task.name!r} raised on the dense model: "
                    f"{type(exc).__name__}: {detail}; fix the task's metric"
                ) from None
    finally:
        model.train(was_training)
