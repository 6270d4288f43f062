"""`autocompress.sensitivity()`: what each level of each knob costs a model alone, cached."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autocompress.config import DEFAULT_TARGET
from autocompress.evaluate.sensitivity import DEFAULT_BATCHES, Sensitivity, sensitivity_for
from autocompress.hardware.targets import default_space
from autocompress.resolve import check_task_fits, model_label, resolve_model, resolve_task
from autocompress.space.discover import discover
from autocompress.space.spec import SearchSpace, load_space, settings_for_methods
from autocompress.task import Task


def sensitivity(
    model: str = "digits-resnet",
    *,
    task: str | Task | None = None,
    space: str | SearchSpace | None = None,
    methods: Sequence[str] | None = None,
    batches: int = DEFAULT_BATCHES,
    refresh: bool = False,
    show_progress: bool = True,
) -> tuple[Sensitivity, Path]:
    """Measure (or load) the per-layer sensitivity of a model for a search space.

    Args:
        model: a zoo name, `pkg.mod:factory` or a Hugging Face folder.
        task: its task (zoo models bring their own).
        space: the search space whose levels are measured (None: the one a search on the
            default target uses).
        methods: only these methods' knobs, as `search --methods`.
        batches: training batches the metric is measured on.
        refresh: measure again even when cached.
        show_progress: draw a progress bar.

    Returns:
        (the sensitivity, its cache file).

    Raises:
        UserInputError: a bad model, task, space or method, or `batches` below 1.
    """
    from autocompress.errors import UserInputError

    if batches < 1:
        raise UserInputError(f"--batches must be at least 1, got {batches}")
    if space is None:
        space = default_space(DEFAULT_TARGET)
    the_space = space if isinstance(space, SearchSpace) else load_space(space)
    settings_for_methods(methods)
    resolved = resolve_model(model)
    the_task = resolve_task(task, resolved)
    check_task_fits(resolved.name, resolved.model, the_task)
    dense = resolved.model.eval()
    layers = discover(dense, the_task.inputs())
    knobs = the_space.knobs(layers, methods=methods, model=dense)
    return sensitivity_for(
        dense,
        the_task,
        knobs,
        model=model_label(model),
        round_to=the_space.round_to,
        batches=batches,
        refresh=refresh,
        show_progress=show_progress,
    )
