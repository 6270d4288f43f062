"""Deployment runtimes a target can time and deploy in (ONNX Runtime, OpenVINO).

Each runtime lives in its own module and imports its library lazily, so `autocompress` imports
without them; `require` turns a missing library into one line with the install command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import UserInputError


@dataclass(frozen=True)
class RuntimeInfo:
    """What a runtime needs installed.

    Args:
        name: the runtime's name in target names (`cpu:onnxruntime`).
        modules: Python modules it imports.
        distributions: the pip distributions that provide them (for versions).
        extra: the autocompress extra that installs them.
    """

    name: str
    modules: tuple[str, ...]
    distributions: tuple[str, ...]
    extra: str

    def missing(self) -> list[str]:
        """The modules that cannot be imported here ([] when the runtime is installed)."""
        absent = []
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError:
                absent.append(module)
        return absent

    def versions(self) -> dict[str, str]:
        """Installed version of each distribution (for target fingerprints)."""
        found = {}
        for dist in self.distributions:
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = "missing"
        return found


RUNTIMES = {
    "onnxruntime": RuntimeInfo(
        "onnxruntime", ("onnx", "onnxscript", "onnxruntime"), ("onnx", "onnxruntime"), "onnx"
    ),
    "openvino": RuntimeInfo(
        "openvino", ("onnx", "onnxscript", "openvino", "nncf"), ("onnx", "openvino", "nncf"),
        "openvino",
    ),
}  # fmt: skip


def require(runtime: str, target: str) -> RuntimeInfo:
    """The runtime's info; raises when its libraries are not installed.

    Args:
        runtime: a key of RUNTIMES.
        target: the target name the user asked for (for the message).

    Raises:
        UserInputError: a module is missing; the message gives the pip command.
    """
    info = RUNTIMES[runtime]
    missing = info.missing()
    if missing:
        raise UserInputError(
            f"--target {target} needs {', '.join(missing)}, which is not installed here; "
            f"install it with: pip install 'autocompress[{info.extra}]'"
        )
    return info


class RuntimeModel(nn.Module):
    """A model loaded in a deployment runtime, callable like the PyTorch model it came from.

    It holds no parameters; `forward` converts tensors to and from NumPy, while `timer` gives a
    call with the inputs converted once, which is what latency is measured on.

    Attributes:
        runtime: the runtime's name.
        quantized: whether the runtime quantized the graph (a plan's int8 layers, or the
            runtime's standard int8 of the whole model); False for a float graph.
        int8_nodes: the graph nodes that run in int8 (empty for a float model).
        int8_scheme: how they run in int8: "static" (calibrated activation ranges) or
            "dynamic" (activations quantized per call: ONNX Runtime's transformers).
        float_layers: the plan's int8 layers the runtime has no int8 kernel for here, which
            run in float (a Gemm under ONNX Runtime's dynamic int8).
        layers: per plan layer, how it deploys ("int8 static", "int8 dynamic",
            "float (no int8 dynamic kernel)", "float (8-bit weights: size only)").
    """

    runtime: str = ""
    int8_scheme: str = "static"

    def __init__(self) -> None:
        super().__init__()
        self.quantized = False
        self.int8_nodes: list[str] = []
        self.float_layers: list[str] = []
        self.layers: dict[str, str] = {}

    def int8_label(self, layer: str) -> str:
        """How the plan's int8 layer `layer` runs here: "int8 static", "int8 dynamic", or
        "float (no int8 dynamic kernel)" where the runtime has none for it."""
        scheme = f"int8 {self.int8_scheme}"
        return f"float (no {scheme} kernel)" if layer in self.float_layers else scheme

    def timer(self, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
        """A zero-argument call of the model on `inputs` (converted to the runtime's form once)."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(inputs)

    def run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The model's first output on `inputs`, as a float tensor."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the deployable artifact to `path` (the runtime's own format)."""
        raise NotImplementedError
