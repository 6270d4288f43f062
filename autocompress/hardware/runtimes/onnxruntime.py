"""ONNX Runtime: load a graph in a session with the target's threads; int8 per layer.

int8 is static QDQ with unsigned-int8 activations and signed per-channel int8 weights: measured
on digits-resnet at 1 thread, that runs 0.14x of PyTorch eager at batch 1, while ORT's default
signed activations fuse only 9 of 21 convolutions and run slower than fp32 (0.37x vs 0.31x),
and dynamic quantization is 1.6-4x slower than eager for convolutions. A graph without
convolutions (a transformer) gets ORT's dynamic quantization, whole-model or per layer:
static QDQ of every node took all-MiniLM-L6-v2's cosine fidelity to 0.35.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.hardware.runtimes import RuntimeModel
from autocompress.hardware.runtimes.onnx_graph import graph_inputs
from autocompress.task import fit_to_shapes

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class OrtModel(RuntimeModel):
    """An ONNX graph in an ONNX Runtime session.

    Args:
        model: the `onnx.ModelProto` (kept, to be saved as the deployable artifact).
        threads: `intra_op_num_threads` (inter-op: 1; all graph optimizations on).
        provider: the execution provider.
    """

    runtime = "onnxruntime"

    def __init__(self, model: Any, *, threads: int, provider: str = CPU) -> None:
        import onnxruntime as ort

        super().__init__()
        self.model_bytes = model.SerializeToString()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.model_bytes, options, providers=[provider])
        self.input_names, self.input_shapes = graph_inputs(model)

    def _feed(self, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        arrays = [t.detach().cpu().contiguous().numpy() for t in inputs]
        fitted = fit_to_shapes(arrays, self.input_shapes)
        return dict(zip(self.input_names, fitted, strict=True))

    def timer(self, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        """`session.run` on `inputs` converted once; see `RuntimeModel.timer`."""
        feed = self._feed(inputs)
        session = self.session
        return lambda: session.run(None, feed)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The first output on `inputs`."""
        return torch.from_numpy(np.asarray(self.session.run(None, self._feed(inputs))[0]))

    def save(self, path: Path) -> None:
        """Write the graph (weights inside) to `path`."""
        path.write_bytes(self.model_bytes)


def quantize(
    model: Any,
    calibration: Iterable[tuple[torch.Tensor, ...]],
    *,
    nodes: Sequence[str] | None,
) -> Any:
    """Static int8 (QDQ, uint8 activations, int8 per-channel weights) for chosen nodes.

    Args:
        model: a float `onnx.ModelProto`.
        calibration: input batches (argument tuples) for the activation ranges.
        nodes: names of the nodes to quantize; None quantizes every node ORT can (the
            runtime's standard post-training quantization of the whole model).

    Returns:
        The quantized `onnx.ModelProto`.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    source = _for_quantizer(model)
    names, shapes = graph_inputs(model)
    arrays = [fit_to_shapes([t.detach().cpu().numpy() for t in b], shapes) for b in calibration]
    feeds = [dict(zip(names, batch, strict=True)) for batch in arrays]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        out = Path(tmp) / "int8.onnx"
        # ORT asks on the root logger for its optional pre-processing; the graph is already
        # shape-inferred and optimized by the exporter.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_static(
                source,
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_quantize=None if nodes is None else list(nodes),
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            logging.disable(previous)
        return onnx.load(str(out))


def _for_quantizer(model: Any) -> Any:
    """A copy of the graph (the caller's, often cached, stays as it was) without its recorded
    intermediate shapes: ORT's quantizers rewrite weights (a classifier head's Gemm weight
    becomes a transposed MatMul weight of the same name) and then re-infer shapes, which fails
    on the stale record ("Inferred shape and existing shape differ", minilm-sentiment's
    2 x 384 head). Shape inference fills them in again."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    return copy


def quantize_dynamic(model: Any, *, nodes: Sequence[str] | None = None) -> Any:
    """ORT's dynamic int8 of MatMul nodes: int8 weights, activations quantized per call (it has
    no dynamic kernel for Gemm, which stays fp32).

    The standard post-training int8 of MatMul-heavy models (transformers); needs no
    calibration. Convolutions are slower this way than in fp32 here: use `quantize` for them.

    Args:
        model: a float `onnx.ModelProto` (not modified).
        nodes: names of the nodes to quantize; None quantizes every one ORT can.

    Returns:
        The quantized `onnx.ModelProto`.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="autocompress-ort-") as tmp:
        source, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(_for_quantizer(model), str(source))
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its optional pre-processing hint, as in `quantize`
        try:
            ort_quantize_dynamic(
                str(source),
                str(out),
                weight_type=QuantType.QInt8,
                nodes_to_quantize=None if nodes is None else list(nodes),
            )
        finally:
            logging.disable(previous)
        return onnx.load(str(out))
