"""PyTorch eager on a CUDA GPU, timed with CUDA events (never run on a GPU so far)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from autocompress.errors import UserInputError
from autocompress.hardware.targets import TARGETS, Target, _check_threads
from autocompress.hardware.timing import Measurement, measure_latency


@TARGETS.register("cuda")
class CudaTarget(Target):
    """PyTorch eager on the first CUDA GPU, timed with CUDA events.

    The model and inputs are copied to the GPU for timing; each call is timed from an event
    recorded before it to one recorded after it, waiting for the second.

    Args:
        threads: CPU intra-op threads (the host side of the launches).
        rounds: default number of timing rounds.

    Raises:
        UserInputError: no CUDA device is available.
    """

    name = "cuda"
    # Never run on a GPU so far; int8 and bf16 plans deploy through oneDNN (CPU) kernels.
    weight_bits = frozenset({32, 4})
    why_not_bits = (
        "its int8 and bf16 kernels are oneDNN's, CPU-only; this target is untested on a GPU"
    )

    def __init__(self, *, threads: int = 1, rounds: int = 15) -> None:
        _check_threads(threads)
        if not torch.cuda.is_available():
            raise UserInputError(
                "--target cuda needs a CUDA GPU and a CUDA build of torch; none is available "
                "here (use --target cpu)"
            )
        self.threads = threads
        self.rounds = rounds

    def fingerprint(self) -> dict[str, str]:
        """GPU name, CUDA version, host threads, torch version and runtime."""
        return {
            "gpu_model": torch.cuda.get_device_name(0),
            "cuda_version": str(torch.version.cuda),
            "threads": str(self.threads),
            "torch_version": torch.__version__,
            "runtime": "pytorch-eager-cuda",
        }

    def measure(
        self,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: nn.Module | None = None,
        rounds: int | None = None,
    ) -> Measurement:
        """Time `model(*inputs)` on the GPU; see `Target.measure`."""
        device = torch.device("cuda", 0)
        gpu_inputs = tuple(x.to(device) for x in inputs)
        gpu_model = copy.deepcopy(model).eval().to(device)
        gpu_ref = None if reference is None else copy.deepcopy(reference).eval().to(device)
        with torch.inference_mode():
            return measure_latency(
                lambda: gpu_model(*gpu_inputs),
                None if gpu_ref is None else lambda: gpu_ref(*gpu_inputs),
                threads=self.threads,
                rounds=self.rounds if rounds is None else rounds,
                clock=_cuda_event_clock,
            )


def _cuda_event_clock(fn: Callable[[], object]) -> float:
    """Nanoseconds from a CUDA event before `fn` to one after it, once the second has happened."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e6
