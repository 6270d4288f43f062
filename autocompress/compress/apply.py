"""Apply a plan to a model: every method in its fixed order, and the deployable build."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autocompress.compress.prune import prune_channels
from autocompress.config import Plan
from autocompress.errors import PlanWarning

if TYPE_CHECKING:
    from autocompress.hardware.targets import Target

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
# The (weight, activation) bits a runtime target (ONNX Runtime, OpenVINO) runs in int8.
INT8 = (8, 8)


def _as_tuple(example_input: Inputs) -> tuple[torch.Tensor, ...]:
    return example_input if isinstance(example_input, tuple) else (example_input,)


def apply(
    model: nn.Module, plan: Plan, example_input: Inputs, *, inplace: bool = False
) -> nn.Module:
    """Build the compressed model a plan describes, ready to fine-tune.

    The order is fixed: prune channels, factorize, sparsify (masks that survive training),
    quantize (fake quantization with a straight-through estimator, so training and accuracy
    see the plan's bits). `deploy` turns the result into real kernels.

    Args:
        model: the dense model.
        plan: per-layer settings; layers it does not name stay as they are.
        example_input: one input batch (tensor or tuple), used to trace layer dependencies.
        inplace: modify `model` itself instead of a deep copy.

    Returns:
        The compressed model, in the training mode `model` was in.
    """
    from autocompress.compress.factorize import factorize
    from autocompress.compress.lstm import lstm_ranks, unroll
    from autocompress.compress.quantize import fake_quantize
    from autocompress.compress.sparsify import sparsify

    target = model if inplace else copy.deepcopy(model)
    prune_channels(target, plan, _as_tuple(example_input))
    layers = plan.layers.items()
    # LSTMs that are factorized or quantized become plain Linear layers in a step loop first.
    unrolled = unroll(target, [n for n, c in layers if c.rank_ratio < 1.0 or c.weight_bits < 32])
    ranks = lstm_ranks(target, {n: c.rank_ratio for n, c in layers if c.rank_ratio < 1.0}, unrolled)
    factorize(target, ranks)
    sparsify(target, {n: (c.sparsity, c.sparsity_pattern) for n, c in layers if c.sparsity > 0})
    fake_quantize(target, {n: (c.weight_bits, c.act_bits) for n, c in layers if c.weight_bits < 32})
    return target


def bake(model: nn.Module) -> nn.Module:
    """The float model `apply` stands for after training: masks made permanent, fake quant removed.

    Args:
        model: a model from `apply` (not modified).

    Returns:
        A copy with plain Conv/Linear layers whose weights hold the exact zeros.
    """
    from autocompress.compress import sparsify
    from autocompress.compress.quantize import strip_fake_quant

    plain = copy.deepcopy(model)
    strip_fake_quant(plain)
    sparsify.bake(plain)
    return plain.eval()


def deploy(
    model: nn.Module,
    plan: Plan,
    example_input: Inputs,
    calibration: Iterable[tuple[torch.Tensor, ...]],
    *,
    compile: bool = True,
) -> Callable[..., torch.Tensor]:
    """The deployable model with real kernels: static int8 for (8, 8) layers, dynamic int8 for
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
        A callable taking the model's inputs; the baked float model when nothing is quantized.
    """
    from autocompress.compress.quantize_real import realize

    plain = bake(model)
    bits = {n: (c.weight_bits, c.act_bits) for n, c in plan.layers.items() if c.weight_bits < 32}
    if not bits:
        return plain
    return realize(plain, bits, _as_tuple(example_input), calibration, compile=compile)


def deploy_on(
    target: Target,
    model: nn.Module,
    plan: Plan,
    example_input: Inputs,
    calibration: Iterable[tuple[torch.Tensor, ...]],
) -> Any:
    """The plan's model in the form `target` runs: real kernels, what `target.measure` times.

    A runtime target (ONNX Runtime, OpenVINO: `RuntimeTarget.realize`) gets the baked model
    and the plan's (8, 8) layers to run in int8; every other target runs `deploy`'s model.

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
    int8 = [n for n, c in plan.layers.items() if (c.weight_bits, c.act_bits) == INT8]
    deployed = target.realize(bake(model), _as_tuple(example_input), calibration, int8)
    deployed.layers = _runtime_layer_kinds(plan)
    return deployed


def _runtime_layer_kinds(plan: Plan) -> dict[str, str]:
    kinds = {}
    for name, cfg in plan.layers.items():
        if (cfg.weight_bits, cfg.act_bits) == INT8:
            kinds[name] = "int8 static"
        elif cfg.weight_bits < 32:
            kinds[name] = f"float ({cfg.weight_bits}-bit weights: size only)"
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
