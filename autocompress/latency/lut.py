"""Kernel lookup tables: which (geometry, format, channel counts) a search space can produce,
and each one timed alone in the target's runtime. `latency.profile` builds a profile on them."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any

import torch

from autocompress.config import LayerConfig
from autocompress.hardware.targets import Target
from autocompress.latency.kernel import FP32, Kernel, LayerShape
from autocompress.latency.kernels import timed_kernel
from autocompress.latency.shapes import ModelShapes
from autocompress.space.spec import Knob

log = logging.getLogger(__name__)

# Per lookup-table entry: few rounds, since entries are many and each is small and steady.
LUT_ROUNDS = 3


def lut_grid(
    shapes: ModelShapes, knobs: Sequence[Knob], round_to: int | None
) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """The channel counts to time for every geometry and number format the space can produce.

    Every combination of a layer's input keep ratio, output keep ratio, rank and bit-widths
    is listed, and every head count an attention core can keep (in fp32); each
    (geometry, format)'s axes are then cut to the smallest, middle and largest value seen.

    Returns:
        ``{(geometry, compute): (cin values, cout values)}``.
    """
    choices: dict[tuple[str, str], list[Any]] = {}
    for knob in knobs:
        for layer in knob.layers:
            choices[(layer, knob.setting)] = list(knob.choices)
    # A group is named after its first member (which may be a layer that is no kernel).
    keeps = {g: choices.get((g, "keep_ratio"), [1.0]) for g in shapes.group_channels}
    kernels: list[Kernel] = []
    for index, layer in enumerate(shapes.layers):
        outs, ins = [layer.out_features], [layer.in_features]
        if layer.group is not None:
            outs = _counts(shapes, layer.group, keeps[layer.group], round_to)
        if layer.in_group is not None:
            kept_in = _counts(shapes, layer.in_group, keeps[layer.in_group], round_to)
            ins = [shapes.fan_in(layer, kept) for kept in kept_in]
        computes = _computes(shapes, layer, choices)
        forms = (False, True) if shapes.unrollable(layer) else (False,)  # an LSTM: both
        for cin, cout, rank, compute, unrolled in itertools.product(
            ins, outs, choices.get((layer.name, "rank_ratio"), [1.0]), computes, forms
        ):
            kernels += shapes.layer_kernels(index, cin, cout, rank, compute, unrolled=unrolled)
    for index, attention in enumerate(shapes.attention):
        for keep in keeps.get(attention.group, [1.0]):
            kernels.append(shapes.attention_kernel(index, shapes.heads_kept(index, keep, round_to)))
    seen: dict[tuple[str, str], tuple[set[int], set[int]]] = {}
    for kernel in kernels:
        axes = seen.setdefault((kernel.geometry, kernel.compute), (set(), set()))
        axes[0].add(kernel.cin)
        axes[1].add(kernel.cout)
    return {key: (_three(cins), _three(couts)) for key, (cins, couts) in seen.items()}


def _computes(
    shapes: ModelShapes, layer: LayerShape, choices: dict[tuple[str, str], list[Any]]
) -> set[str]:
    """The number formats a layer can deploy in under the space's bit-width choices, and that
    have kernel tables: a runtime's int8 kernels are not timed alone (its fp32 tables and the
    whole-plan calibration cover them)."""
    found = {FP32}
    if shapes.runtime != "pytorch":
        return found
    for weight_bits in choices.get((layer.name, "weight_bits"), [32]):
        for act_bits in choices.get((layer.name, "act_bits"), [32]):
            if act_bits == 8 and weight_bits != 8:
                continue  # not a valid plan; the decoder maps it to float activations
            cfg = LayerConfig(weight_bits=weight_bits, act_bits=act_bits)
            found.add(shapes.compute_of(layer, cfg))
    return found


def _counts(
    shapes: ModelShapes, group: str, keeps: Sequence[float], round_to: int | None
) -> list[int]:
    return sorted({shapes.kept(group, k, round_to) for k in keeps})


def _three(values: set[int]) -> list[int]:
    ordered = sorted(values)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})


def measure_lut(
    grid: dict[tuple[str, str], tuple[list[int], list[int]]],
    target: Target,
    batch: int,
    *,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Time every (geometry, format, cin, cout) point of a grid alone, in the target's runtime.

    Args:
        grid: from `lut_grid`.
        target: where to time.
        batch: batch size.
        progress: a `Bar` to advance per entry, or None.

    Returns:
        `{"geometry", "compute", "cin", "cout", "out_elems", "ms"}` per entry; a point with
        no kernel of its format (see `kernels.timed_kernel`) is left out, and the predictor
        falls back to its regression there.
    """
    entries = []
    for (geometry, compute), (cins, couts) in grid.items():
        spec = json.loads(geometry)
        for cin in cins:
            for cout in couts:
                try:
                    layer, x = timed_kernel(spec, cin, cout, compute, batch)
                except ValueError as exc:
                    log.info("no %s lookup table for %s: %s", compute, geometry, exc)
                else:
                    with torch.inference_mode():
                        out = layer(x)
                    # per sample: an LSTM returns (output, state), its output batch first
                    out_elems = (out[0] if isinstance(out, tuple) else out)[0].numel()
                    ms = target.measure(layer, (x,), rounds=LUT_ROUNDS).median_ms
                    entries.append(
                        {
                            "geometry": geometry,
                            "compute": compute,
                            "cin": cin,
                            "cout": cout,
                            "out_elems": out_elems,
                            "ms": ms,
                        }
                    )
                if progress is not None:
                    progress.advance()
    return entries
