"""Targets that deploy on a runtime other than PyTorch: ONNX Runtime and OpenVINO on the CPU,
ONNX Runtime on a CUDA GPU.

A plan is realized in the runtime (`compress.apply.deploy_on` gives `RuntimeTarget.realize`
the baked model and the plan's int8 layers): the baked model (pruned, factorized, sparse
weights as zeros) is exported to ONNX; its (8, 8) layers then run in int8 (ONNX Runtime: static
QDQ on those layers' nodes and the activations, pooling and residual adds between them, or,
in a graph without convolutions (a transformer), ORT's dynamic int8 on those layers' MatMul
nodes, as its plain int8 model has (a Gemm has no dynamic kernel and stays fp32); OpenVINO:
NNCF with every other layer in its ignored scope); all other layers stay fp32. bf16, int4 and
int8-weight-only layers have no faster kernel in these runtimes for an fp32 model:
they count as size only.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.hardware.runtimes import RuntimeModel, require
from autocompress.hardware.targets import (
    EAGER_ALTERNATIVE,
    TARGETS,
    TWIN_ROUNDS,
    Reference,
    Target,
    _check_threads,
    _cpu_model,
)
from autocompress.hardware.timing import Measurement, measure_latency


class RuntimeTarget(Target):
    """A target whose models run in a deployment runtime; subclasses load and quantize graphs.

    Args:
        threads: the runtime's intra-op threads while timing.
        rounds: default number of timing rounds.

    Raises:
        UserInputError: the runtime is not installed (the message gives the pip command).
    """

    runtime: str
    device: str = "cpu"
    space = "runtime"  # pruning in channel multiples, low rank and all-int8 layers
    artifact: str  # the file `export` writes (and `load_artifact` reads)

    def __init__(self, *, threads: int = 1, rounds: int = 15) -> None:
        _check_threads(threads)
        self.info = require(self.runtime, self.name)
        self.threads = threads
        self.rounds = rounds
        # The dense model is the reference of every measurement: exported and loaded once.
        self._graphs: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()
        self._loaded: weakref.WeakKeyDictionary[nn.Module, RuntimeModel] = (
            weakref.WeakKeyDictionary()
        )

    def fingerprint(self) -> dict[str, str]:
        """CPU model, cores, threads, torch (the exporter) and the runtime with its versions."""
        return {
            "cpu_model": _cpu_model(),
            "logical_cores": str(os.cpu_count() or 0),
            "threads": str(self.threads),
            "torch_version": torch.__version__,
            "runtime": self.runtime,
            **{f"{k}_version": v for k, v in self.info.versions().items()},
        }

    def load_graph(self, graph: Any) -> RuntimeModel:
        """A float ONNX graph loaded in the runtime."""
        raise NotImplementedError

    def quantize_graph(
        self,
        graph: Any,
        calibration: Iterable[tuple[torch.Tensor, ...]],
        int8_nodes: list[str] | None,
    ) -> RuntimeModel:
        """An ONNX graph with the given weight nodes in int8 (None: the runtime's standard
        int8 of every layer), loaded in the runtime."""
        raise NotImplementedError

    def load_artifact(self, path: Path) -> RuntimeModel:
        """A model saved by `RuntimeModel.save`, loaded in the runtime."""
        raise NotImplementedError

    def graph(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
        """A float PyTorch model's ONNX graph (exported once per module; do not modify it)."""
        from autocompress.hardware.runtimes.onnx_graph import to_onnx

        if module not in self._graphs:
            self._graphs[module] = to_onnx(module, inputs)
        return self._graphs[module]

    def load(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> RuntimeModel:
        """A float PyTorch model exported and loaded in the runtime (cached per module)."""
        if module not in self._loaded:
            self._loaded[module] = self.load_graph(self.graph(module, inputs))
        return self._loaded[module]

    def timer(self, model: Any, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        """A runtime model's timed call; a PyTorch module is loaded in the runtime first."""
        if isinstance(model, EagerModel):
            return model.timer(inputs)
        if not isinstance(model, RuntimeModel):
            model = self.load(model, inputs)
        return model.timer(inputs)

    def realize(
        self,
        baked: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        calibration: Iterable[tuple[torch.Tensor, ...]],
        int8_layers: list[str],
    ) -> RuntimeModel:
        """A float model exported to ONNX and loaded in the runtime, the named layers in int8;
        see the module docstring.

        Args:
            baked: the float model (`compress.apply.bake`'s); not modified.
            inputs: one input batch as positional arguments.
            calibration: input batches (argument tuples) for static int8 ranges.
            int8_layers: the module names of the layers to run in int8.

        Raises:
            ValueError: one of `int8_layers` has no node in the exported graph.
        """
        from autocompress.hardware.runtimes.onnx_graph import layer_nodes, to_onnx

        graph = to_onnx(baked, inputs)
        nodes = layer_nodes(graph, int8_layers)
        lost = [name for name, found in nodes.items() if not found]
        if lost:
            raise ValueError(f"no node of layer(s) {', '.join(lost)} in the exported ONNX graph")
        if not int8_layers:
            return self.load_graph(graph)
        model = self.quantize_graph(
            graph, calibration, [n for name in int8_layers for n in nodes[name]]
        )
        done = set(model.int8_nodes)
        model.float_layers = [name for name in int8_layers if not done & set(nodes[name])]
        return model

    def measure(
        self,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: nn.Module | None = None,
        rounds: int | None = None,
    ) -> Measurement:
        """Time a model in the runtime, interleaved with `reference`; see `Target.measure`.

        A PyTorch module (the dense model, a single layer) is exported and loaded as float.
        """
        candidate = self.timer(model, inputs)
        ref = None if reference is None else self.timer(reference, inputs)
        return measure_latency(
            candidate,
            ref,
            threads=self.threads,
            rounds=self.rounds if rounds is None else rounds,
        )

    def reference_for(
        self,
        dense: nn.Module,
        deployed: Any,
        inputs: tuple[torch.Tensor, ...],
        *,
        to_dense: float | None = None,
    ) -> Reference:
        """The dense model for a float graph; for a quantized one, the dense model in the
        runtime's standard int8 (the plain int8 alternative; `twin_reference`).

        A deployed int8 graph is small and cache-resident, the float dense model is not: in
        ONNX Runtime at batch 1 on effnet-fmnist, the dense model's time interleaved with
        four int8 plans ranged 0.83-0.99 ms (0.886 alone), so those plans' ratios to it moved
        by up to 18% between two measurements an hour apart, while each plan's own time
        moved by under 2%. Against the int8 dense model the same ratios repeated within 1%.
        Float plans stay against the fp32 dense model: against the int8 twin, six pruned
        float plans of effnet-fmnist repeated within 1% (2.4-16% against the fp32 model), but
        on digits-resnet the fp32 dense model itself then measured 0.533 ms against its own
        0.726: interleaved with a large float model the small twin runs slower, which biases
        every large float model's ratio low. The twin's calibration is the timing batch: a
        kernel's time does not depend on the activation ranges. `to_dense`: see
        `Target.reference_for`.
        """
        if not (isinstance(deployed, RuntimeModel) and deployed.quantized):
            return Reference(dense)
        return self.twin_reference(
            dense,
            inputs,
            kind="int8",
            build=lambda: self.quantize_graph(self.graph(dense, inputs), [inputs], None),
            to_dense=to_dense,
        )

    def twin_ratio(self, twin: Any, dense: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
        """The int8 twin's time over the dense model's, each timed alone (twin, dense, twin,
        dense, `TWIN_ROUNDS` x the default rounds each; of each model's two, the faster: a
        phase of the host only ever slows a run).

        Interleaved, the fp32 dense model is the unsteady side (see `reference_for`), and the
        twin's ratio carries every int8 plan of a process: on effnet-fmnist, timed that way, a
        candidate the study put at 0.345 ms measured 0.291 ms from disk in export's process,
        1.00x its in-memory graph. Alone, each model's time repeats across processes (the
        dense model 0.883 and 0.886 ms an hour apart).
        """
        rounds = TWIN_ROUNDS * self.rounds
        times: dict[str, list[float]] = {"twin": [], "dense": []}
        for _ in range(2):
            for name, model in (("twin", twin), ("dense", dense)):
                times[name].append(self.measure(model, inputs, rounds=rounds).median_ms)
        return min(times["twin"]) / min(times["dense"])

    def alternatives(
        self, dense: nn.Module, inputs: tuple[torch.Tensor, ...], calibration: list[Any]
    ) -> dict[str, Callable[[], Any]]:
        """The dense model in this runtime at fp32 and with the runtime's standard int8."""
        label = RUNTIME_LABELS[self.runtime]
        return {
            f"dense, {label} fp32": lambda: self.load(dense, inputs),
            f"dense, {label} int8": lambda: self.quantize_graph(
                self.graph(dense, inputs), calibration, None
            ),
            EAGER_ALTERNATIVE: lambda: EagerModel(dense),
        }


class EagerModel(nn.Module):
    """A PyTorch model to be timed as it is (eager), not loaded in the target's runtime.

    Args:
        model: the model (evaluated in eval mode, without gradients).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, *inputs: torch.Tensor) -> Any:
        with torch.inference_mode():
            return self.model(*inputs)

    def timer(self, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        """A zero-argument call on `inputs`, in inference mode."""
        return lambda: self(*inputs)


RUNTIME_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "pytorch": "PyTorch"}


@TARGETS.register("cpu:onnxruntime")
class OrtCpuTarget(RuntimeTarget):
    """ONNX Runtime's CPU execution provider."""

    name = "cpu:onnxruntime"
    runtime = "onnxruntime"
    provider = "CPUExecutionProvider"
    artifact = "model.onnx"

    def load_artifact(self, path: Path) -> RuntimeModel:
        """An ONNX file in a session."""
        import onnx

        return self.load_graph(onnx.load(str(path)))

    def load_graph(self, graph: Any) -> RuntimeModel:
        """The graph in an ONNX Runtime session (see `runtimes.onnxruntime.OrtModel`)."""
        from autocompress.hardware.runtimes.onnxruntime import OrtModel

        return OrtModel(graph, threads=self.threads, provider=self.provider)

    def quantize_graph(
        self,
        graph: Any,
        calibration: Iterable[tuple[torch.Tensor, ...]],
        int8_nodes: list[str] | None,
    ) -> RuntimeModel:
        """Static QDQ int8 on the nodes and the ops between them; see `RuntimeTarget`.

        A graph without convolutions (a transformer) gets ORT's dynamic quantization on the
        nodes instead (on every MatMul for the whole-model int8, `int8_nodes` None):
        the runtime's standard for transformers. In one minilm-sentiment search, a plan with
        37 layers in static QDQ int8 and none pruned ran 12.7 ms, the plain dynamic int8
        model 10.9 ms.
        """
        from autocompress.hardware.runtimes.onnx_graph import has_convolutions, int8_region
        from autocompress.hardware.runtimes.onnxruntime import quantize, quantize_dynamic

        dynamic = not has_convolutions(graph)
        if dynamic:
            quantized = quantize_dynamic(graph, nodes=int8_nodes)
        else:
            nodes = None if int8_nodes is None else int8_region(graph, int8_nodes)
            quantized = quantize(graph, calibration, nodes=nodes)
        model = self.load_graph(quantized)
        model.quantized = True
        model.int8_nodes = list(int8_nodes or [])
        if dynamic:  # ORT's dynamic int8 has MatMul kernels, none for Gemm (a 2-D Linear)
            op_types = {n.name: n.op_type for n in graph.graph.node}
            model.int8_nodes = [n for n in model.int8_nodes if op_types[n] == "MatMul"]
            model.int8_scheme = "dynamic"
        return model


@TARGETS.register("cuda:onnxruntime")
class OrtCudaTarget(OrtCpuTarget):
    """ONNX Runtime's CUDA execution provider (needs onnxruntime-gpu and a GPU).

    Raises:
        UserInputError: ONNX Runtime has no CUDA execution provider here.
    """

    name = "cuda:onnxruntime"
    device = "cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self, *, threads: int = 1, rounds: int = 15) -> None:
        super().__init__(threads=threads, rounds=rounds)
        import onnxruntime as ort

        from autocompress.errors import UserInputError

        if self.provider not in ort.get_available_providers():
            raise UserInputError(
                "--target cuda:onnxruntime needs ONNX Runtime's CUDA execution provider and a "
                "GPU; install onnxruntime-gpu on a machine with one (or use --target "
                "cpu:onnxruntime)"
            )

    def fingerprint(self) -> dict[str, str]:
        """As the CPU target's, plus the GPU's name."""
        return {**super().fingerprint(), "device": "cuda"}


@TARGETS.register("cpu:openvino")
class OpenVinoCpuTarget(RuntimeTarget):
    """OpenVINO on the CPU, fp32 compute, int8 through NNCF."""

    name = "cpu:openvino"
    runtime = "openvino"
    artifact = "model.xml"

    def load_artifact(self, path: Path) -> RuntimeModel:
        """An OpenVINO IR (.xml with its .bin beside it), compiled."""
        import openvino as ov

        from autocompress.hardware.runtimes.openvino import OvModel

        return OvModel(ov.Core().read_model(str(path)), threads=self.threads)

    def load_graph(self, graph: Any) -> RuntimeModel:
        """The graph converted and compiled by OpenVINO (see `runtimes.openvino.OvModel`)."""
        from autocompress.hardware.runtimes.openvino import OvModel, convert

        return OvModel(convert(graph), threads=self.threads)

    def quantize_graph(
        self,
        graph: Any,
        calibration: Iterable[tuple[torch.Tensor, ...]],
        int8_nodes: list[str] | None,
    ) -> RuntimeModel:
        """NNCF int8 with every weight node but `int8_nodes` in the ignored scope; a graph
        without convolutions in NNCF's transformer mode."""
        from autocompress.hardware.runtimes.onnx_graph import WEIGHT_OPS, has_convolutions
        from autocompress.hardware.runtimes.openvino import OvModel, convert, ov_names, quantize

        keep = [] if int8_nodes is None else int8_nodes
        floats = [
            n.name
            for n in graph.graph.node
            if n.op_type in WEIGHT_OPS and int8_nodes is not None and n.name not in keep
        ]
        float_model = convert(graph)
        quantized = quantize(
            float_model,
            calibration,
            keep_float=ov_names(float_model, floats),
            transformer=not has_convolutions(graph),
        )
        model = OvModel(quantized, threads=self.threads)
        model.quantized = True
        model.int8_nodes = list(keep)
        return model
