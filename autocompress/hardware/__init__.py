"""Hardware targets and the timing protocol that measures latency on them."""

from autocompress.hardware.targets import TARGETS, CpuTarget, Target, resolve_target
from autocompress.hardware.timing import Measurement, measure_latency

__all__ = ["TARGETS", "CpuTarget", "Measurement", "Target", "measure_latency", "resolve_target"]
