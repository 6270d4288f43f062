"""Library noise, filtered where it is raised.

Some packages log lines at import or export time that say nothing about the user's model:
torchao cannot load its CUDA-only kernels on a CPU build ("Failed to load ..._C_mxfp8.so"),
torch's pytree notes that torchao registers an enum the old way, torch's ONNX exporter
skips torchvision's ops when torchvision is not installed and its optimizer cannot fold some
constants; deep-copying a traced graph
warns that torch's own copy code uses a deprecated class. Each is dropped only around the
call that raises it, by its logger and words, so every other line still reaches the user.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


class _Drop(logging.Filter):
    def __init__(self, phrases: tuple[str, ...]) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


@contextlib.contextmanager
def dropped_logs(logger: str, *phrases: str) -> Iterator[None]:
    """Inside the block, drop the records of `logger` whose message contains one of `phrases`.

    Args:
        logger: the logger's name, as the library creates it (`logging.getLogger(__name__)`).
        phrases: words that identify the lines to drop.
    """
    target = logging.getLogger(logger)
    drop = _Drop(phrases)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


@contextlib.contextmanager
def quiet_torchao_import() -> Iterator[None]:
    """Inside the block, importing torchao (directly, or by transformers as it loads a model,
    or by NNCF) does not log its lines about CUDA-only kernels, Triton and enum registration."""
    with (
        dropped_logs("torchao", "Failed to load"),
        dropped_logs("torchao.kernel.intmm", "Detected no triton"),
        dropped_logs("torch.utils._pytree", "is an Enum subclass"),
    ):
        yield


def import_torchao() -> None:
    """Import torchao's PT2E quantization (it registers the int8 ops `torch.export.load`
    needs), quietly (`quiet_torchao_import`)."""
    with quiet_torchao_import():
        import torchao.quantization.pt2e  # noqa: F401


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Inside the block, torch's ONNX exporter does not say it skips torchvision's ops, and
    its graph optimizer (onnxscript) does not say, once per node, that it could not fold a
    constant: a transformer's attention-mask reshape, about 40 lines per export of
    minilm-sentiment, and the node stays as it was."""
    with (
        dropped_logs("torch.onnx._internal.exporter._registration", "torchvision is not installed"),
        dropped_logs("onnxscript.optimizer._constant_folding", "Evaluation failed"),
    ):
        yield


def copy_graph(module: T) -> T:
    """`copy.deepcopy` of a module that may be a traced graph, without torch's warning that
    copying its tree specs (`LeafSpec`) uses a deprecated class: torch's own copy code does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
        return copy.deepcopy(module)
