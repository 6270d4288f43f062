"""Realize a bit-width plan with real kernels: int8 through torchao PT2E, lowered by inductor.

Static int8 (8, 8) and dynamic int8 (8, 32) Linear layers are quantized in one exported graph
with torchao's X86InductorQuantizer, restricted to the planned layers (every other layer stays
float in the same graph), then compiled by inductor with freezing into oneDNN int8 kernels.
bf16 layers compute in bf16 where the CPU has native bf16; everything else at low bits counts
as size only (float compute on weights rounded to what the artifact stores).

Measured here (digits-resnet, 1x32x32, 1 thread, 2-core EPYC Zen 4; ratios are medians of
interleaved rounds vs fp32 eager via `measure_latency`, lower is faster):
- all (8, 8): 0.38x at batch 1 (0.91 ms), 0.27x at batch 32 (9.0 ms); fp32 compiled: 0.77x, 0.82x.
- half the layers (8, 8), every other one: 0.51x at batch 1, 0.56x at batch 32.
- realize() wall time (export, prepare, calibrate 8 batches, convert, compile, first call):
  17 s with a cold inductor cache, 5-9 s warm; each new input shape compiles again (~4 s).
- top-1 on the validation split: fp32 99.07%, fake-quant int8 99.07%, real int8 99.07%.
- bf16 vs fp32, both compiled: all layers 0.73x b1 / 0.54x b32; every other layer 0.90x / 0.83x;
  one isolated layer 1.09x / 0.98x (casts in and out): bf16 compute is on where oneDNN has
  native bf16 (this CPU), else bf16 is size only.
- three Linears 512-1024-1024-512 vs fp32 eager: dynamic int8 1.01x b1 / 0.28x b32, static
  0.95x / 0.27x; fp32 compiled is slower than eager here (1.6x / 1.1x).
- int4 weights and weight-only int8 convolutions: no faster CPU kernel for fp32 models; size only.
"""

from __future__ import annotations

import copy
import dataclasses
import unittest.mock
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from autocompress.compress._swap import swap_module
from autocompress.compress.int8_embedding import Int8Embedding
from autocompress.compress.quantize import planned_leaves, quantize_weight, strip_fake_quant
from autocompress.errors import PlanWarning
from autocompress.quiet import import_torchao
from autocompress.task import fit_to_shapes

_ATEN = torch.ops.aten
_COMPUTE_OPS = (_ATEN.conv1d.default, _ATEN.conv2d.default, _ATEN.linear.default)


class RealizedModel(nn.Module):
    """A deployable model: the converted int8 graph, compiled, called without gradients.

    Args:
        graph_module: the converted (quantized, uncompiled) exported graph; `torch.export`
            can save it (import `torchao.quantization.pt2e` before `torch.export.load`). Or,
            for a plan without int8 layers, the eager model itself.
        layers: how each planned Conv/Linear leaf was realized, e.g. ``"int8 static"``.
        compiled: lower with inductor (real int8 kernels); False runs the reference graph.
    """

    def __init__(
        self, graph_module: nn.Module, layers: Mapping[str, str], compiled: bool = True
    ) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.layers = dict(layers)
        self.compiled = compiled
        run = torch.compile(graph_module, dynamic=False) if compiled else graph_module
        # Kept out of the module tree: the compiled wrapper holds the same graph_module.
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_seen", set())
        object.__setattr__(self, "_shapes", input_shapes(graph_module))

    def train(self, mode: bool = True) -> RealizedModel:
        """Record the mode only: the graph is an inference graph and has no training mode."""
        self.training = mode
        return self

    def compiled_twin(self, model: nn.Module, inputs: tuple[Tensor, ...]) -> RealizedModel:
        """`model` deployed as a compiled plan is, to time this model against
        (`hardware.targets.CpuTarget.reference_for`): see `compile_float`."""
        return compile_float(model, inputs)

    def forward(self, *args: Tensor) -> Any:
        """The model's outputs; the first call per input shape compiles (freezing weights).

        Inference mode counts as part of the key: dynamo compiles a call under
        `torch.inference_mode()` apart from one under `no_grad`, and a graph compiled without
        freezing runs the int8 layers on unpacked weights (all-MiniLM-L6-v2 int8: 39 ms in
        inference mode after a first call under no_grad, against 13.5 ms frozen).
        """
        args = self._fitted(args)
        key = (
            torch.is_inference_mode_enabled(),
            *((a.shape, a.dtype) for a in args if isinstance(a, Tensor)),
        )
        with torch.no_grad():
            if key in self._seen:
                return self._run(*args)
            # Freezing (constant weights -> prepacked oneDNN int8) only while compiling: a
            # process-wide setting would also freeze the weights of models still being trained.
            # The C++ wrapper cuts the per-kernel Python overhead: 0.76x the time at batch 1.
            with (
                torch._inductor.config.patch(freezing=True, cpp_wrapper=True),
                warnings.catch_warnings(),
            ):
                # inductor's int8 lowering copy-constructs a tensor: noise, not ours to fix.
                warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
                out = self._run(*args)
            self._seen.add(key)
            return out

    def _fitted(self, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """`args` zero-padded or cut to the graph's static sizes beyond the batch dimension,
        as the runtime models fit theirs (`task.fit_to_shapes`): a text model exported at 64
        tokens is scored on validation batches padded to their own longest text."""
        shapes = self._shapes
        if shapes is None or len(shapes) != len(args):
            return args
        if all(
            not isinstance(a, Tensor)
            or all(size is None or a.shape[i] == size for i, size in enumerate(s) if i)
            for a, s in zip(args, shapes, strict=True)
        ):
            return args
        arrays = fit_to_shapes([a.detach().cpu().numpy() for a in args], shapes)
        return tuple(torch.from_numpy(x).to(a.device) for x, a in zip(arrays, args, strict=True))


def input_shapes(graph_module: nn.Module) -> list[list[int | None]] | None:
    """The static sizes of an exported graph's inputs (None for a dynamic dimension), or None
    where it is no exported graph (an eager model) or an input is not a tensor."""
    graph = getattr(graph_module, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return None
    shapes = []
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("val")
        if not isinstance(value, Tensor):
            return None
        shapes.append([d if isinstance(d, int) else None for d in value.shape])
    return shapes


def realize(
    model: nn.Module,
    bits: Mapping[str, tuple[int, int]],
    example_inputs: tuple[Tensor, ...],
    calibration: Iterable[tuple[Tensor, ...]],
    *,
    bf16_compute: bool | None = None,
    compile: bool = True,
) -> nn.Module:
    """Build the deployable model a bit-width plan describes, with real kernels.

    (8, 8) Conv2d/Linear: static int8 (uint8 activations per tensor, int8 weights per output
    channel); (8, 32) Linear: dynamic int8; (16, 32): bf16 weights and compute where
    `bf16_compute`, else bf16-rounded weights in fp32; (8, 32) convolutions and (4, 32): weights
    rounded to int8/int4 in fp32 (size only). Layers the plan leaves out stay fp32. A layer it
    cannot handle is named in a warning and stays fp32.

    Args:
        model: the (fine-tuned) float model; not modified. Fake-quant wrappers are stripped.
        bits: ``{layer_name: (weight_bits, act_bits)}``; a name may be a container.
        example_inputs: one input batch as positional arguments; the first call compiles for it.
        calibration: input batches (positional-argument tuples) to set activation ranges.
        bf16_compute: compute bf16 layers in bf16; None: where oneDNN has native bf16.
        compile: lower with inductor; False returns the reference graph (slow, for checks).

    Returns:
        A `RealizedModel`, callable like `model`: compiled (and already called once on
        `example_inputs`) when some layer runs int8 kernels, which need inductor; otherwise
        eager, its bf16 layers computing in bf16 and its size-only layers holding rounded weights.
    """
    if bf16_compute is None:
        bf16_compute = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    work = copy.deepcopy(model).eval()
    strip_fake_quant(work)
    static: set[str] = set()
    dynamic: set[str] = set()
    layers: dict[str, str] = {}
    for _, name, leaf, (weight_bits, act_bits) in planned_leaves(work, bits, "realized"):
        is_linear = isinstance(leaf, nn.Linear)
        if isinstance(leaf, nn.Embedding) and weight_bits == 8:
            swap_module(work, name, Int8Embedding.from_float(leaf))
            layers[name] = "int8 table"
        elif isinstance(leaf, nn.Embedding):
            with torch.no_grad():
                leaf.weight.copy_(quantize_weight(leaf.weight, weight_bits))
            layers[name] = f"{'bf' if weight_bits == 16 else 'int'}{weight_bits} table, size only"
        elif (weight_bits, act_bits) == (8, 8) and isinstance(leaf, nn.Conv1d):
            # torch 2.13's inductor lowers a static-int8 Conv1d with the wrong output length
            # (22 instead of 20 for k5/s2/p2 on 40 samples); keep it float, count int8 as size.
            warnings.warn(
                f"layer {name!r} stays fp32: static int8 Conv1d is miscompiled by this torch; "
                "its int8 weights count as size only",
                PlanWarning,
                stacklevel=3,
            )
            with torch.no_grad():
                leaf.weight.copy_(quantize_weight(leaf.weight, 8))
            layers[name] = "int8 weights, size only"
        elif (weight_bits, act_bits) == (8, 8):
            static.add(name)
        elif (weight_bits, act_bits) == (8, 32) and is_linear:
            dynamic.add(name)
        elif weight_bits == 16 and bf16_compute:
            swap_module(work, name, _Bf16Compute(leaf))
            layers[name] = "bf16"
        elif weight_bits < 32:
            with torch.no_grad():
                leaf.weight.copy_(quantize_weight(leaf.weight, weight_bits))
            layers[name] = f"{'bf' if weight_bits == 16 else 'int'}{weight_bits} weights, size only"
    if not (static or dynamic):
        # Nothing needs inductor: the model runs eagerly, as float plans do (compiling would
        # change the runtime, and costs 1.4-1.7x eager on a model as small as digits-cnn).
        return RealizedModel(work, layers, compiled=False)
    exported = _export(work, example_inputs)
    _as_torch_layers(exported, work)
    graph = _quantize(exported, static, dynamic, calibration, example_inputs)
    done = quantized_layers(graph)
    for name in sorted(static | dynamic):
        kind = "static" if name in static else "dynamic"
        if done.get(name) == kind:
            layers[name] = f"int8 {kind}"
        else:
            warnings.warn(
                f"layer {name!r} stays fp32: no {kind} int8 pattern", PlanWarning, stacklevel=2
            )
            layers[name] = "fp32 (not quantized)"
    realized = RealizedModel(graph, layers, compiled=compile)
    realized(*example_inputs)
    return realized


def compile_float(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> RealizedModel:
    """The float model deployed the way a plan with int8 layers is: exported and compiled by
    inductor with frozen weights and the C++ wrapper, no layer quantized.

    A compiled plan is timed against this twin of the dense model rather than the eager one:
    the same code path drifts the same way over a long process (`CpuTarget.reference_for`).

    Args:
        model: the float model; not modified. Fake-quant wrappers are stripped.
        example_inputs: one input batch as positional arguments; compiled for it here.

    Returns:
        A compiled `RealizedModel`, already called once on `example_inputs`.
    """
    work = copy.deepcopy(model).eval()
    strip_fake_quant(work)
    realized = RealizedModel(_export(work, example_inputs), {}, compiled=True)
    realized(*example_inputs)
    return realized


def quantized_layers(graph_module: nn.Module) -> dict[str, str]:
    """The Conv/Linear layers of a converted graph that compute in int8, and how.

    Args:
        graph_module: a graph after `convert_pt2e` (`RealizedModel.graph_module`); any other
            module (an eager one) has none.

    Returns:
        ``{layer_name: "static" | "dynamic"}``; layers left float are absent.
    """
    dq = torch.ops.quantized_decomposed
    found: dict[str, str] = {}
    graph = getattr(graph_module, "graph", None)
    for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
        if node.op != "call_function" or node.target not in _COMPUTE_OPS:
            continue
        x, w = node.args[0], node.args[1]
        if getattr(w, "target", None) != dq.dequantize_per_channel.default:
            continue
        dynamic = getattr(x, "target", None) == dq.dequantize_per_tensor.tensor
        found[_module_of(node)] = "dynamic" if dynamic else "static"
    return found


class _Bf16Compute(nn.Module):
    """A layer computed in bf16: bf16 weights, input cast in and output cast back."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(torch.bfloat16)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(torch.bfloat16)).to(x.dtype)


# torch.export marks the second and later calls of one module in `nn_module_stack` keys.
_CALL = "@"


def _module_of(node: torch.fx.Node) -> str:
    """The name of the innermost module a graph node was traced from ('' if none)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    name = list(stack.values())[-1][0]
    return name.removeprefix("L['self'].").partition(_CALL)[0]


def _as_torch_layers(graph: nn.Module, model: nn.Module) -> None:
    """Record the graph's nodes as the int8 quantizer needs to find its patterns.

    - Subclassed Conv/Linear layers as the torch class: the quantizer finds a layer's nodes by
      the class name its graph records for the innermost module (`nn_module_stack`), compared
      exactly, so the nodes of an `nn.Conv2d` subclass that pads in `forward` (models ported
      from TensorFlow) would match no pattern and stay fp32.
    - Each call of a module called more than once as its own source: the quantizer groups
      nodes by module path, and one activation module applied twice (EfficientNet-Lite's
      `_swish`, a ReLU6, after the stem and before the head) made one pattern with two
      outputs, which it refuses ("Input partition has more than one output node"): no int8
      plan of such a model could be built. The call's index (`@1`) joins the path.

    `_module_of` still finds the layer by its name.

    Args:
        graph: the exported graph module (changed in place: node metadata only).
        model: the model it was exported from.
    """
    modules = dict(model.named_modules())
    for node in getattr(graph, "graph", torch.fx.Graph()).nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (path, cls) = list(stack.items())[-1]
        module = modules.get(path.removeprefix("L['self']."))
        base = next((b for b in (nn.Conv1d, nn.Conv2d, nn.Linear) if isinstance(module, b)), None)
        if base is not None and type(module) is not base:
            stack[key] = (path, f"{base.__module__}.{base.__qualname__}")
        elif base is None and _CALL in key:  # a repeated call: its own partition
            stack[key] = (f"{path}{_CALL}{key.rpartition(_CALL)[2]}", cls)


def _export(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> nn.Module:
    """torch.export the model with a dynamic batch dimension (static if that fails)."""
    # A batch of 1 would be specialized (0/1 specialization): trace with a batch of 2.
    traced = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in example_inputs)
    dims = tuple({0: torch.export.Dim.DYNAMIC} if t.dim() else None for t in example_inputs)
    try:
        return torch.export.export(model, traced, dynamic_shapes=dims).module()
    except Exception as exc:  # a model that fixes its batch size, e.g. by a reshape
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        warnings.warn(
            f"batch dimension not dynamic ({reason}); realized for the example's shapes only",
            stacklevel=3,
        )
        return torch.export.export(model, example_inputs).module()


def _quantize(
    graph: nn.Module,
    static: set[str],
    dynamic: set[str],
    calibration: Iterable[tuple[Tensor, ...]],
    example_inputs: tuple[Tensor, ...],
) -> nn.Module:
    """Annotate, calibrate and convert the planned layers of an exported graph (PT2E)."""
    import_torchao()
    from torchao.quantization.pt2e import quantize_pt2e

    with warnings.catch_warnings():
        # Mixed precision leaves float inputs before some pooling ops on purpose.
        warnings.filterwarnings("ignore", "The input of .* is not quantized", UserWarning)
        prepared = quantize_pt2e.prepare_pt2e(graph, _plan_quantizer(static, dynamic))
    batches = 0
    # A graph traced at the example's sizes (a text model at 128 tokens) calibrates on
    # batches fitted to them: training batches are padded to their own longest sequence.
    shapes = [[None, *t.shape[1:]] for t in example_inputs]
    with torch.no_grad():
        for batch in calibration:
            arrays = fit_to_shapes([t.numpy() for t in batch], shapes)
            prepared(*(torch.from_numpy(a) for a in arrays))
            batches += 1
        if static and not batches:
            warnings.warn(
                "no calibration batches: activation ranges from the example", stacklevel=3
            )
            prepared(*example_inputs)
    # convert_pt2e folds quantization-aware-training conv+bn patterns by exporting ~100 pattern
    # graphs whenever a BatchNorm is left (one after a bf16 layer, or not after a conv): ~30 s
    # here. Post-training preparation already folded every conv+bn, so that step has no work.
    with unittest.mock.patch.object(quantize_pt2e, "_fold_conv_bn_qat", lambda m: m):
        converted = quantize_pt2e.convert_pt2e(prepared)
    # The float weights the int8 ones were made from stay attached, unused: an exported
    # artifact would carry them, four times the int8 bytes. Drop every unused tensor.
    used = {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    names = [n for n, _ in [*converted.named_parameters(), *converted.named_buffers()]]
    for name in (n for n in names if n not in used):
        owner, _, attr = name.rpartition(".")
        delattr(converted.get_submodule(owner) if owner else converted, attr)
    converted.delete_all_unused_submodules()
    return converted


def _plan_quantizer(static: set[str], dynamic: set[str]) -> Any:
    """An X86InductorQuantizer that quantizes exactly the planned layers, with its fusions.

    Per-name configs (`set_module_name_qconfig`) need every node of a fused pattern (conv, add,
    relu) to come from one module, so they lose the conv+add+relu fusions: measured 2x slower at
    batch 32 than the global recipe. This applies the global recipe, restricted by a filter to
    patterns whose Conv/Linear is planned (pooling/flatten/cat still carry int8 between them).
    """
    import_torchao()
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    def config(is_dynamic: bool) -> Any:
        cfg = xiq.get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)
        # [-127, 127] like the fake quantization (torch's default is [-128, 127]).
        return dataclasses.replace(cfg, weight=dataclasses.replace(cfg.weight, quant_min=-127))

    def only(names: set[str], propagate: bool) -> Any:
        def accept(nodes: list[torch.fx.Node]) -> bool:
            ops = [n for n in nodes if n.target in xiq.default_quantizable_ops]
            if len(ops) != 1:
                return False
            if ops[0].target in xiq.propagation_quantizable_ops:
                return propagate  # annotated only where its inputs come from int8 patterns
            return ops[0].target in _COMPUTE_OPS and _module_of(ops[0]) in names

        return accept

    class PlanQuantizer(xiq.X86InductorQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if dynamic:
                self._annotate_with_config(model, config(True), only(dynamic, propagate=False))
            if static:
                self._annotate_with_config(model, config(False), only(static, propagate=True))
            self._annotate_output_for_int8_in_int8_out_pattern_entry(model)
            return model

    return PlanQuantizer()
