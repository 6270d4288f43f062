"""OpenVINO on the CPU: compile a graph with the target's threads in fp32; int8 through NNCF.

Measured on this CPU (Zen 4): OpenVINO computes in bf16 unless the inference precision hint
says f32, and `ov.save_model` stores fp16 weights unless told not to; both are set here so that
a float layer stays float. Graphs come from the same ONNX export as ONNX Runtime's; OpenVINO
names a converted node after the ONNX node (`node_conv2d_3/WithoutBiases`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.hardware.runtimes import RuntimeModel
from autocompress.quiet import quiet_torchao_import
from autocompress.task import fit_to_shapes


def _config(threads: int) -> dict[str, Any]:
    return {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }


class OvModel(RuntimeModel):
    """An OpenVINO model compiled for the CPU.

    Args:
        model: an `openvino.Model` (kept, to be saved as the deployable artifact).
        threads: `INFERENCE_NUM_THREADS`.
    """

    runtime = "openvino"

    def __init__(self, model: Any, *, threads: int) -> None:
        import openvino as ov

        super().__init__()
        self.model = model
        self.compiled = ov.Core().compile_model(model, "CPU", _config(threads))
        self.request = self.compiled.create_infer_request()
        self.input_shapes = _static_shapes(model)

    def _feed(self, inputs: Sequence[torch.Tensor]) -> dict[int, np.ndarray]:
        """Inputs as arrays fitted to the model's static sizes (see `task.fit_to_shapes`)."""
        arrays = [t.detach().cpu().contiguous().numpy() for t in inputs]
        return dict(enumerate(fit_to_shapes(arrays, self.input_shapes)))

    def timer(self, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        """One synchronous inference on `inputs` converted once; see `RuntimeModel.timer`."""
        feed = self._feed(inputs)
        request = self.request
        return lambda: request.infer(feed)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The first output on `inputs`."""
        return torch.from_numpy(np.array(self.request.infer(self._feed(inputs))[0], copy=True))

    def save(self, path: Path) -> None:
        """Write the IR (`path` is the .xml; the weights go beside it as .bin), fp32 weights."""
        import openvino as ov

        ov.save_model(self.model, str(path), compress_to_fp16=False)


def _static_shapes(model: Any) -> list[list[int | None]]:
    """Each input's dimensions of an `openvino.Model`, None where dynamic."""
    return [
        [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        for port in model.inputs
    ]


def convert(onnx_model: Any) -> Any:
    """An `openvino.Model` from an `onnx.ModelProto`."""
    import openvino as ov

    return ov.Core().read_model(onnx_model.SerializeToString(), ov.Tensor(np.empty(0, np.uint8)))


def ov_names(model: Any, onnx_nodes: Iterable[str]) -> list[str]:
    """The OpenVINO node names converted from the given ONNX nodes."""
    wanted = set(onnx_nodes)
    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_friendly_name() in wanted or op.get_friendly_name().split("/")[0] in wanted
    ]


# CPU flags of the int8 dot-product instructions that accumulate without saturating.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has VNNI (or AMX) int8 dot products, from /proc/cpuinfo's flags.

    Without them, x86 int8 kernels (AVX2, AVX-512 `vpmaddubsw`) can saturate their 16-bit
    intermediate sums, and NNCF by default quantizes the first convolution's weights to 7
    bits to avoid it (its "overflow fix"). With them the fix only costs precision:
    measured on effnet-fmnist (Zen 4, VNNI), a fine-tuned all-int8 candidate scored 91.05% in
    OpenVINO with the fix and 92.45% without (91.95% in PyTorch); the dense model 91.50% and
    91.35%.

    Args:
        cpuinfo: the text of /proc/cpuinfo (read when None; False where unreadable).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not _VNNI_FLAGS.isdisjoint(value.split())
    return False


def quantize(
    model: Any,
    calibration: Iterable[tuple[torch.Tensor, ...]],
    *,
    keep_float: Sequence[str],
    transformer: bool = False,
) -> Any:
    """NNCF's post-training int8 quantization, with some nodes kept in float; the first
    convolution's weights keep all 8 bits where the CPU has VNNI (`has_vnni`).

    Args:
        model: a float `openvino.Model` (not modified).
        calibration: input batches (argument tuples) for the activation ranges.
        keep_float: OpenVINO node names to leave out (NNCF's ignored scope).
        transformer: quantize in NNCF's transformer mode (SmoothQuant, the attention's
            matmuls kept apart); NNCF's default mode fails on minilm-sentiment's graph
            (a KeyError on the token embedding).

    Returns:
        The quantized `openvino.Model`.
    """
    with quiet_torchao_import():  # NNCF's torch backend imports torchao
        import nncf

    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)
    overflow_fix = OverflowFix.DISABLE if has_vnni() else OverflowFix.FIRST_LAYER
    shapes = _static_shapes(model)
    fitted = [fit_to_shapes([t.detach().cpu().numpy() for t in b], shapes) for b in calibration]
    batches = [tuple(arrays) if len(arrays) > 1 else arrays[0] for arrays in fitted]
    # NNCF draws progress bars on stdout with no switch to turn them off.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(
            model.clone(),
            nncf.Dataset(batches),
            subset_size=max(1, len(batches)),
            ignored_scope=nncf.IgnoredScope(names=list(keep_float), validate=False),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix),
        )
