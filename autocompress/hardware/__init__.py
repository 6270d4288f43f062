"""Hardware targets and the timing protocol that measures latency on them."""

# The CUDA and runtime targets (ONNX Runtime, OpenVINO) register themselves on import.
from autocompress.hardware import cuda_target as _cuda_target  # noqa: F401
from autocompress.hardware import runtime_targets as _runtime_targets  # noqa: F401
from autocompress.hardware.targets import TARGETS, CpuTarget, Target, resolve_target
from autocompress.hardware.timing import Measurement, measure_latency

__all__ = ["TARGETS", "CpuTarget", "Measurement", "Target", "measure_latency", "resolve_target"]
