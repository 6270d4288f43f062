"""Apply a plan to a model: every method in its fixed order, and the deployable build."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autocompress.compress.lstm import unroll
from autocompress.compress.method import Applying, ordered, present
from autocompress.config import Plan
from autocompress.errors import PlanWarning

if TYPE_CHECKING:
    from autocompress.hardware.targets import Target

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
# LSTMs are unrolled after the stages up to this one (pruning removes hidden units of a whole
# nn.LSTM) and before the later ones (a factorized or quantized LSTM runs as Linear layers).
UNROLL_AFTER = 15


def _as_tuple(example_input: Inputs) -> tuple[torch.Tensor, ...]:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def apply(
    model: nn.Module, plan: Plan, example_input: Inputs, *, inplace: bool = False
) -> nn.Module:
    """Build the compressed model a plan describes, ready to fine-tune.

    Every registered method (`compress.METHODS`) applies its part of the plan, in the fixed
    order of their stages: prune channels, factorize, sparsify (masks that survive training),
    quantize (fake quantization with a straight-through estimator, so training and accuracy
    see the plan's bits), and any method added since at its stage. `deploy` turns the result
    into real kernels.

    Args:
        model: the dense model.
        plan: per-layer settings; layers it does not name stay as they are.
        example_input: one input batch (tensor or tuple), used to trace layer dependencies.
        inplace: modify `model` itself instead of a deep copy.

    Returns:
        The compressed model, in the training mode `model` was in.
    """
    target = model if inplace else copy.deepcopy(model)
    context = Applying(_as_tuple(example_input))
    methods = ordered()
    had = {name for name, _ in target.named_modules()}
    unrolled = False
    for method in methods:
        if method.stage > UNROLL_AFTER and not unrolled:
            # LSTMs that a later stage changes become plain Linear layers in a step loop.
            changed = [n for n, c in plan.layers.items() if any(m.unrolls(c) for m in methods)]
            context.unrolled = unroll(target, changed)
            unrolled = True
        method.apply(target, present(plan, target, had=had), context)
    return target


def bake(model: nn.Module) -> nn.Module:
    """The float model `apply` stands for after training: every method's training-time form
    made permanent (masks as zeros, fake quant removed), latest stage first.

    Args:
        model: a model from `apply` (not modified).

    Returns:
        A copy with plain Conv/Linear layers whose weights hold the exact values deployed.
    """
    plain = copy.deepcopy(model)
    for method in reversed(ordered()):
        method.bake(plain)
    return plain.eval()


def deploy(
    model: nn.Module,
    plan: Plan,
    example_input: Inputs,
    calibration: Iterable[tuple[torch.Tensor, ...]],
    *,
    compile: bool = True,
) -> Callable[..., torch.Tensor]:
    """The deployable model with real kernels: the baked model, then each method's deployed
    form in stage order. Quantization gives static int8 for (8, 8) layers, dynamic int8 for
    (8, 32) Linears, bf16 compute where the CPU has it, float elsewhere, in one compiled graph
    (see `quantize_real.realize`); int4 and int8-weight convs count as size only.

    Args:
        model: a model from `apply`, usually fine-tuned (not modified).
        plan: the plan it was built from.
        example_input: one input batch at the batch size it will be run at.
        calibration: input batches (as argument tuples) for static int8 ranges.
        compile: lower int8 graphs with inductor; False keeps the reference graph (the same
            graph an artifact stores, without the seconds of compiling; slow to run).

    Returns:
        A callable taking the model's inputs; the baked float model when no method deploys
        it otherwise.
    """
    deployed: Any = bake(model)
    plan = present(plan, deployed)
    for method in ordered():
        deployed = method.deploy(
            deployed, plan, _as_tuple(example_input), calibration, compile=compile
        )
    return deployed


def deploy_on(
    target: Target,
    model: nn.Module,
    plan: Plan,
    example_input: Inputs,
    calibration: Iterable[tuple[torch.Tensor, ...]],
) -> Any:
    """The plan's model in the form `target` runs: real kernels, what `target.measure` times.

    A runtime target (ONNX Runtime, OpenVINO: `RuntimeTarget.realize`) gets the baked model
    and the plan's layers some method runs in int8 there (`Method.runtime_int8`); every
    other target runs `deploy`'s model.

    Args:
        target: the target it is measured and exported on.
        model: a model from `apply`, usually fine-tuned (not modified).
        plan: the plan it was built from.
        example_input: one input batch at the batch size it will be run at.
        calibration: input batches (argument tuples) for static int8 ranges.

    Returns:
        The deployable model: a runtime model whose `layers` say how each planned layer runs,
        or `deploy`'s callable.

    Raises:
        ValueError: on a runtime target, an int8 layer of the plan has no node in the graph.
    """
    from autocompress.hardware.runtime_targets import RuntimeTarget

    if not isinstance(target, RuntimeTarget):
        return deploy(model, plan, example_input, calibration)
    methods = ordered()
    baked = bake(model)
    plan = present(plan, baked)
    int8 = [n for n, c in plan.layers.items() if any(m.runtime_int8(c) for m in methods)]
    deployed = target.realize(baked, _as_tuple(example_input), calibration, int8)
    deployed.layers = _runtime_layer_kinds(plan, deployed)
    return deployed


def _runtime_layer_kinds(plan: Plan, deployed: Any) -> dict[str, str]:
    """Per plan layer, how it runs: the runtime names its int8 layers' scheme
    (`RuntimeModel.int8_label`), each method the rest of what it does to the layer."""
    kinds = {}
    methods = ordered()
    for name, cfg in plan.layers.items():
        found = [
            deployed.int8_label(name) if m.runtime_int8(cfg) else m.runtime_kind(cfg)
            for m in methods
        ]
        if any(found):
            kinds[name] = ", ".join(k for k in found if k)
    return kinds


@contextlib.contextmanager
def plan_notes() -> Iterator[list[str]]:
    """Collect what a plan could not apply, instead of printing it.

    Each `PlanWarning` raised inside the block (a layer kept as it was: a 2:4 pattern on a
    width that pruning left odd, a layer with no int8 pattern) goes into the yielded list,
    once per message, in the order raised, when the block ends; every other warning is shown
    as usual.

    Yields:
        The list the messages are added to.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PlanWarning)
        try:
            yield notes
        finally:
            planned = [r for r in caught if issubclass(r.category, PlanWarning)]
            notes.extend(dict.fromkeys(str(r.message) for r in planned))
    for record in caught:
        if not issubclass(record.category, PlanWarning):
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
