"""Hardware targets: a device plus the runtime a model is deployed on, and how to time it there."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from autocompress.errors import UserInputError
from autocompress.hardware.timing import Measurement, measure_latency
from autocompress.registry import Registry

log = logging.getLogger(__name__)

# The plain alternative a runtime target lists for scale: its dense model in PyTorch eager.
EAGER_ALTERNATIVE = "dense, PyTorch eager fp32"

# Two ratios of one pair further apart than this get a third (`Target.measure_settled`).
SETTLE_TOLERANCE = 0.03
# A twin's ratio to the dense model carries every plan timed against it: time it longer.
TWIN_ROUNDS = 4


@dataclass(frozen=True)
class Reference:
    """What a deployed model is timed against, and how that reference relates to the dense model.

    Attributes:
        model: the model timed interleaved with the candidate.
        to_dense: its latency as a ratio to the dense model's (1.0: it is the dense model), so
            that candidate / reference times `to_dense` is candidate / dense.
    """

    model: nn.Module
    to_dense: float = 1.0


class Target(ABC):
    """Where a compressed model will run; plans are measured and predicted per target.

    Attributes:
        name: the name the user types (`--target cpu`).
        threads: intra-op threads the model is timed with; part of the fingerprint.
        rounds: default number of timing rounds.
    """

    name: str
    threads: int
    rounds: int
    runtime: str = "pytorch"
    # The packaged search space a search on this target uses when none is given: one whose
    # levels pay off in this target's kernels.
    space: str = "default"
    # The weight bit-widths this target can deploy a plan with; None: every one a plan takes.
    weight_bits: frozenset[int] | None = None
    why_not_bits: str = ""

    def check_bits(self, offered: Iterable[int]) -> None:
        """Refuse a search space that offers bit-widths this target cannot deploy.

        Args:
            offered: the weight bit-widths the space's knobs offer.

        Raises:
            UserInputError: naming the widths, why, and how to search without them.
        """
        if self.weight_bits is None:
            return
        refused = sorted(set(offered) - self.weight_bits, reverse=True)
        if refused:
            widths = ", ".join(str(b) for b in refused)
            raise UserInputError(
                f"--target {self.name} cannot deploy weight_bits {widths} ({self.why_not_bits}); "
                "search with --methods prune,lowrank,sparse or a space without them"
            )

    @abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """What makes a timing on this target comparable to another: device, threads, runtime."""

    @abstractmethod
    def measure(
        self,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: nn.Module | None = None,
        rounds: int | None = None,
    ) -> Measurement:
        """Time `model(*inputs)` on this target, interleaved with `reference(*inputs)` if given.

        Args:
            model: the candidate model, in the form deployed on this target.
            inputs: positional inputs for one call.
            reference: the model the candidate is compared with (usually the dense model).
            rounds: timing rounds; None for the target's default.

        Returns:
            The Measurement; its `ratio` is candidate / reference, None without a reference.
        """

    def measure_settled(
        self,
        model: Any,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: Any,
        rounds: int | None = None,
    ) -> Measurement:
        """Time a ratio to `reference` twice, and a third time when the two disagree.

        A ratio is the median of paired rounds, which cancels drift slower than a round but
        not a phase of the machine that lasts a whole measurement: the host slowing the core
        by 10-50% for a second or so shifts candidate and reference unequally. On
        digits-resnet's compiled plans, 4 of 36 back-to-back ratios of one deployed model were
        4-12% off their median, each during such a phase (one of the two models' times up
        10-50%); the others stayed within 3%. Two ratios within `SETTLE_TOLERANCE` of each
        other are averaged; otherwise the median of three is kept.

        Args:
            model: the candidate, as `measure` takes it.
            inputs: positional inputs for one call.
            reference: what the ratio is taken to.
            rounds: timing rounds per measurement; None for the target's default.

        Returns:
            The kept Measurement; two averaged ones give the mean of each time and ratio,
            with their rounds added up.
        """
        runs = [self.measure(model, inputs, reference=reference, rounds=rounds) for _ in range(2)]
        first, second = (run.ratio for run in runs)
        assert first is not None and second is not None
        if abs(first / second - 1) <= SETTLE_TOLERANCE:
            return _mean(*runs)
        runs.append(self.measure(model, inputs, reference=reference, rounds=rounds))
        return sorted(runs, key=lambda run: run.ratio or 0.0)[1]

    def reference_for(
        self,
        dense: nn.Module,
        deployed: Any,
        inputs: tuple[torch.Tensor, ...],
        *,
        to_dense: float | None = None,
    ) -> Reference:
        """What to time a deployed plan against: by default the dense model itself.

        A target whose deployed models do not all run the way its dense model does overrides
        this with a dense model that runs like `deployed` (`twin_reference`).

        Args:
            dense: the dense model.
            deployed: the plan's model as this target runs it (`compress.apply.deploy_on`).
            inputs: the input batch it is timed with.
            to_dense: a twin's ratio to the dense model where the caller has it already (export
                has the study's); None: timed here. Unused where the reference is the dense
                model itself.

        Returns:
            The Reference.
        """
        return Reference(dense)

    @functools.cached_property
    def _twins(self) -> weakref.WeakKeyDictionary[nn.Module, dict[Any, Reference]]:
        """Per dense model: its twins by key (see `twin_reference`)."""
        return weakref.WeakKeyDictionary()

    def twin_reference(
        self,
        dense: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        kind: str,
        build: Callable[[], Any],
        to_dense: float | None = None,
    ) -> Reference:
        """A twin of the dense model that runs the way a deployed plan does, with its ratio to
        the dense model (`twin_ratio`) timed once per dense model, input shapes and `kind`.

        Args:
            dense: the dense model.
            inputs: the input batch it is timed with.
            kind: what sort of twin (a key of the cache: "compiled", "int8").
            build: builds the twin, on first use only.
            to_dense: the twin's ratio, given: the twin is built, not timed, and not cached.

        Returns:
            The Reference, the same object for every call with the same key (a given
            `to_dense`: a new one).
        """
        if to_dense is not None:
            return Reference(build(), to_dense)
        key = (kind, *((t.shape, t.dtype) for t in inputs))
        cached = self._twins.setdefault(dense, {})
        if key not in cached:
            twin = build()
            ratio = self.twin_ratio(twin, dense, inputs)
            log.info("%s dense model: %.3f x the dense one", kind, ratio)
            cached[key] = Reference(twin, ratio)
        return cached[key]

    def twin_ratio(self, twin: Any, dense: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
        """A twin's latency as a ratio to the dense model's: interleaved and settled, with
        `TWIN_ROUNDS` x the default rounds (it carries every plan timed against the twin)."""
        timed = self.measure_settled(
            twin, inputs, reference=dense, rounds=TWIN_ROUNDS * self.rounds
        )
        assert timed.ratio is not None
        return timed.ratio

    def alternatives(
        self, dense: nn.Module, inputs: tuple[torch.Tensor, ...], calibration: list[Any]
    ) -> dict[str, Callable[[], Any]]:
        """What a user could deploy without a search: label -> a builder of that model.

        Args:
            dense: the dense model.
            inputs: the input batch latency is measured with.
            calibration: input batches for static int8 ranges.

        Returns:
            Builders, called one at a time (a failing one is reported, not fatal).
        """
        return {}

    def fingerprint_id(self) -> str:
        """A short stable hash of the fingerprint (12 hex chars), for cache keys."""
        text = json.dumps(sorted(self.fingerprint().items()))
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def _mean(a: Measurement, b: Measurement) -> Measurement:
    """Two measurements of the same pair as one: mean times and ratio, rounds added up."""

    def mean(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else (x + y) / 2

    return replace(
        a,
        median_ms=(a.median_ms + b.median_ms) / 2,
        p10_ms=min(a.p10_ms, b.p10_ms),
        p90_ms=max(a.p90_ms, b.p90_ms),
        reference_ms=mean(a.reference_ms, b.reference_ms),
        ratio=mean(a.ratio, b.ratio),
        rounds=a.rounds + b.rounds,
        remeasured_blocks=a.remeasured_blocks + b.remeasured_blocks,
    )


TARGETS: Registry[type[Target]] = Registry("target")
# The CUDA and runtime targets (ONNX Runtime, OpenVINO) register themselves when the package
# imports them (`hardware/__init__.py`); their libraries load lazily.


@runtime_checkable
class CompiledModel(Protocol):
    """A deployed model that may run compiled (`compress.quantize_real.RealizedModel`), and
    compiles a float model the way it is compiled itself, to be timed against."""

    compiled: bool

    def compiled_twin(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        """`model` compiled as this model is, for `inputs`' shapes, already called once."""
        ...


@TARGETS.register("cpu")
class CpuTarget(Target):
    """PyTorch eager on this machine's CPU.

    Args:
        threads: torch intra-op threads while timing (1 gives the most repeatable figures).
        rounds: default number of timing rounds.
    """

    name = "cpu"

    def __init__(self, *, threads: int = 1, rounds: int = 15) -> None:
        _check_threads(threads)
        self.threads = threads
        self.rounds = rounds

    def fingerprint(self) -> dict[str, str]:
        """CPU model, logical cores, threads, torch version and runtime, all as strings."""
        return {
            "cpu_model": _cpu_model(),
            "logical_cores": str(os.cpu_count() or 0),
            "threads": str(self.threads),
            "torch_version": torch.__version__,
            "runtime": "pytorch-eager",
        }

    def measure(
        self,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        *,
        reference: nn.Module | None = None,
        rounds: int | None = None,
    ) -> Measurement:
        """Time `model(*inputs)` in eval mode under `torch.inference_mode()`; see `Target.measure`.

        The models are switched to eval mode for the timing and back to their previous mode after.
        """
        models = [m for m in (model, reference) if isinstance(m, nn.Module)]
        # Per submodule, so that a model with some parts deliberately in eval mode comes back as is.
        was_training = {sub: sub.training for m in models for sub in m.modules()}
        for m in models:
            m.eval()
        try:
            with torch.inference_mode():
                return measure_latency(
                    _call(model, inputs),
                    None if reference is None else _call(reference, inputs),
                    threads=self.threads,
                    rounds=self.rounds if rounds is None else rounds,
                )
        finally:
            for sub, training in was_training.items():
                sub.training = training

    def reference_for(
        self,
        dense: nn.Module,
        deployed: Any,
        inputs: tuple[torch.Tensor, ...],
        *,
        to_dense: float | None = None,
    ) -> Reference:
        """The dense model for an eager plan; for a compiled one (it has int8 layers), the
        dense model compiled the same way (`twin_reference`).

        Compiled and eager code drift apart over a long process: against the eager dense model
        a compiled plan's ratio varied 5-7% (CV) between repeats on digits-resnet, against the
        compiled dense model 1-2% (`bench/compiled_noise.py`). See `Target.reference_for`.
        """
        if not (isinstance(deployed, CompiledModel) and deployed.compiled):
            return Reference(dense)
        return self.twin_reference(
            dense,
            inputs,
            kind="compiled",
            build=lambda: deployed.compiled_twin(dense, inputs),
            to_dense=to_dense,
        )

    def alternatives(
        self, dense: nn.Module, inputs: tuple[torch.Tensor, ...], calibration: list[Any]
    ) -> dict[str, Callable[[], Any]]:
        """The dense model in ONNX Runtime at fp32 and int8, where ONNX Runtime is installed.

        PyTorch's own int8 of the dense model (the all-int8 plan) is not listed: it compiles
        for ~20 s per study and runs at 0.38x of eager at batch 1, where ONNX Runtime's int8
        runs at 0.14x (digits-resnet, this CPU), so it is never the best alternative here.
        """
        from autocompress.hardware.runtimes import RUNTIMES

        if RUNTIMES["onnxruntime"].missing():
            return {}
        ort = TARGETS.get("cpu:onnxruntime")(threads=self.threads, rounds=self.rounds)
        builders = ort.alternatives(dense, inputs, calibration)
        builders.pop(EAGER_ALTERNATIVE)  # on this target that is the dense baseline itself
        return builders


def _call(model: Any, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
    """A zero-argument call of `model` on `inputs`; a runtime model times its own call."""
    timer = getattr(model, "timer", None)
    if callable(timer):
        return timer(inputs)
    return lambda: model(*inputs)


def default_space(spec: str | Target) -> str:
    """The packaged search space a target searches when none is given (`Target.space`).

    Raises:
        UnknownNameError: no target of that name.
    """
    return spec.space if isinstance(spec, Target) else TARGETS.get(spec).space


def resolve_target(spec: str | Target, *, threads: int = 1) -> Target:
    """Turn `--target` into a Target: a Target passes through, a name is looked up.

    Args:
        spec: a registered target name ("cpu") or a Target instance.
        threads: intra-op threads for a target built from a name.

    Returns:
        The Target.

    Raises:
        UserInputError: threads below 1.
        UnknownNameError: no target of that name; the message lists the known ones.
    """
    _check_threads(threads)
    if isinstance(spec, Target):
        return spec
    return TARGETS.get(spec)(threads=threads)


def _check_threads(threads: int) -> None:
    if threads < 1:
        raise UserInputError(f"--threads must be at least 1, got {threads}")


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else whatever the platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
