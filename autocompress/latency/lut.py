"""Kernel lookup tables: which (geometry, format, channel counts) a search space can produce,
and each one timed alone in the target's runtime. `latency.profile` builds a profile on them."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autocompress.compress.method import Method, kernel_effect, ordered
from autocompress.config import LayerConfig, repair
from autocompress.hardware.targets import Target
from autocompress.latency.kernel import FP32, Kernel
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

    Every combination of a layer's input keep ratio, output keep ratio, rank and number format
    is listed (each layer's configs drawn from the space's choices and read through the
    methods' kernel effects, `compress.method.kernel_effect`), and every head count an
    attention core can keep (in fp32); each (geometry, format)'s axes are then cut to the
    smallest, middle and largest value seen.

    Returns:
        ``{(geometry, compute): (cin values, cout values)}``.
    """
    choices: dict[str, dict[str, list[Any]]] = {}
    for knob in knobs:
        for layer in knob.layers:
            choices.setdefault(layer, {})[knob.setting] = list(knob.choices)
    configs = {name: _configs(c) for name, c in choices.items()}
    # A group is named after its first member (which may be a layer that is no kernel).
    keeps = {
        g: sorted({kernel_effect(c).keep_ratio for c in configs.get(g, [LayerConfig()])})
        for g in shapes.group_channels
    }
    kernels: list[Kernel] = []
    for index, layer in enumerate(shapes.layers):
        outs, ins = [layer.out_features], [layer.in_features]
        if layer.group is not None:
            outs = _counts(shapes, layer.group, keeps[layer.group], round_to)
        if layer.in_group is not None:
            kept_in = _counts(shapes, layer.in_group, keeps[layer.in_group], round_to)
            ins = [shapes.fan_in(layer, kept) for kept in kept_in]
        own = configs.get(layer.name, [LayerConfig()])
        ranks = sorted({kernel_effect(c).rank_ratio for c in own}, reverse=True)
        computes = {FP32}
        if shapes.runtime == "pytorch":
            # a runtime's int8 kernels are not timed alone (its fp32 tables and the
            # whole-plan calibration cover them)
            computes |= {shapes.compute_of(layer, c) for c in own}
        forms = (False, True) if shapes.unrollable(layer) else (False,)  # an LSTM: both
        for cin, cout, rank, compute, unrolled in itertools.product(
            ins, outs, ranks, sorted(computes), forms
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


def _configs(choices: Mapping[str, Sequence[Any]]) -> list[LayerConfig]:
    """Every config a layer can take under the space's choices of the knobs that change
    kernels (those of methods with a kernel effect); impossible combinations are mapped to
    the nearest valid ones, as the sampler does."""
    kernel_knobs = {s.name for m in ordered() if _changes_kernels(m) for s in m.settings}
    names = [n for n in choices if n in kernel_knobs]
    found: dict[LayerConfig, None] = {}
    for values in itertools.product(*(choices[n] for n in names)):
        found[LayerConfig(**repair(dict(zip(names, values, strict=True))))] = None
    return list(found) or [LayerConfig()]


def _changes_kernels(method: Method) -> bool:
    """Whether a method declares any effect on a layer's kernels."""
    kind = type(method)
    return kind.kernel_effect is not Method.kernel_effect or kind.unrolls is not Method.unrolls


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
