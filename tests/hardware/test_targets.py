"""Targets: the cpu target's fingerprint, its measurements, and resolving `--target`."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from autocompress.compress.quantize_real import realize
from autocompress.errors import UnknownNameError, UserInputError
from autocompress.hardware.targets import TARGETS, CpuTarget, Reference, Target, resolve_target
from autocompress.hardware.timing import Measurement


def _mlp(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Dropout(0.5), nn.Linear(width, 10))


def test_fingerprint_has_the_documented_keys() -> None:
    fp = CpuTarget(threads=2).fingerprint()
    assert set(fp) == {"cpu_model", "logical_cores", "threads", "torch_version", "runtime"}
    assert all(isinstance(v, str) and v for v in fp.values())
    assert fp["threads"] == "2"
    assert fp["runtime"] == "pytorch-eager"
    assert fp["torch_version"] == torch.__version__


def test_fingerprint_id_is_stable_and_depends_on_threads() -> None:
    one = CpuTarget(threads=1).fingerprint_id()
    assert re.fullmatch(r"[0-9a-f]{12}", one)
    assert CpuTarget(threads=1).fingerprint_id() == one
    assert CpuTarget(threads=2).fingerprint_id() != one


def test_measure_small_sequential_against_a_reference() -> None:
    model, reference = _mlp(256), _mlp(256)
    model.train()
    reference.eval()
    reference[2].train()  # a submodule whose mode differs from its parent's
    x = torch.randn(8, 64)
    m = CpuTarget().measure(model, (x,), reference=reference, rounds=3)
    assert isinstance(m, Measurement)
    assert m.median_ms > 0 and m.reference_ms is not None and m.reference_ms > 0
    assert m.ratio is not None and 0.5 < m.ratio < 2.0
    assert m.rounds == 3 and m.threads == 1
    # previous modes restored, submodule by submodule
    assert all(sub.training for sub in model.modules())
    assert [sub.training for sub in reference] == [False, False, True, False]


def test_measure_without_reference_uses_default_rounds() -> None:
    m = CpuTarget(rounds=2).measure(_mlp(32), (torch.randn(1, 64),))
    assert m.ratio is None and m.rounds == 2 and m.median_ms > 0


def test_measure_runs_in_inference_mode() -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_inference_mode_enabled() and not self.training)
            return x + 1

    CpuTarget(rounds=1).measure(Probe(), (torch.zeros(4),))
    assert seen and all(seen)


def test_an_eager_model_is_timed_against_the_dense_model_itself() -> None:
    dense = _mlp(32).eval()
    x = (torch.randn(1, 64),)
    eager = realize(dense, {"0": (16, 32)}, x, [x])  # bf16: no int8 layer, runs eagerly
    assert not eager.compiled
    assert CpuTarget().reference_for(dense, eager, x) == Reference(dense, 1.0)


@pytest.mark.usefixtures("quick_timing")  # which reference is timed, not how precisely
def test_a_compiled_model_is_timed_against_the_dense_model_compiled_once() -> None:
    dense = _mlp(32).eval()
    x = (torch.randn(1, 64),)
    target = CpuTarget(rounds=2)
    int8 = realize(dense, {"0": (8, 8)}, x, [x, (torch.randn(4, 64),)])
    assert int8.compiled
    reference = target.reference_for(dense, int8, x)
    twin = reference.model
    assert twin is not dense and getattr(twin, "compiled", False)
    assert getattr(twin, "layers", None) == {}, "the twin is the float model, no int8 layer"
    with torch.inference_mode():
        assert torch.allclose(twin(*x), dense(*x), atol=1e-5)
    assert 0.0 < reference.to_dense < 10.0
    assert target.reference_for(dense, int8, x) is reference, "compiled and timed once"
    other = target.reference_for(dense, int8, (torch.randn(2, 64),))
    assert other.model is not twin, "another batch size is compiled for apart"


def test_a_twin_with_a_given_ratio_is_built_but_not_timed(monkeypatch) -> None:
    dense = _mlp(32).eval()
    x = (torch.randn(1, 64),)
    target = CpuTarget(rounds=2)
    int8 = realize(dense, {"0": (8, 8)}, x, [x, (torch.randn(4, 64),)])
    monkeypatch.setattr(target, "twin_ratio", lambda *a: pytest.fail("timed a given ratio"))
    given = target.reference_for(dense, int8, x, to_dense=0.4)
    assert given.to_dense == 0.4 and getattr(given.model, "compiled", False)
    # Not cached: a later call without a ratio times its own.
    monkeypatch.setattr(target, "twin_ratio", lambda *a: 0.7)
    assert target.reference_for(dense, int8, x).to_dense == 0.7
    assert CpuTarget().reference_for(dense, dense, x, to_dense=0.4) == Reference(dense, 1.0)


class _Scripted(Target):
    """A target whose measurements return the given ratios in turn (and count the calls)."""

    name = "scripted"
    threads = 1

    def __init__(self, ratios: list[float]) -> None:
        self.ratios = list(ratios)
        self.calls = 0

    def fingerprint(self) -> dict[str, str]:
        return {"device": "scripted"}

    def measure(self, model, inputs, *, reference=None, rounds=None) -> Measurement:
        ratio = self.ratios[self.calls]
        self.calls += 1
        return Measurement(
            median_ms=ratio, p10_ms=ratio * 0.9, p90_ms=ratio * 1.1, reference_ms=1.0,
            ratio=ratio, rounds=rounds or 15, calls_per_block=3, threads=1, remeasured_blocks=0,
        )  # fmt: skip


def test_two_agreeing_ratios_are_averaged() -> None:
    target = _Scripted([0.50, 0.51, 9.0])
    m = target.measure_settled(_mlp(8), (torch.zeros(1, 64),), reference=_mlp(8), rounds=4)
    assert target.calls == 2, "no third measurement when the first two agree"
    assert m.ratio == pytest.approx(0.505) and m.median_ms == pytest.approx(0.505)
    assert m.rounds == 8 and m.p10_ms == pytest.approx(0.45) and m.p90_ms == pytest.approx(0.561)


@pytest.mark.parametrize("ratios", [[0.50, 0.56, 0.51], [0.56, 0.50, 0.51], [0.44, 0.50, 0.51]])
def test_disagreeing_ratios_get_a_third_and_keep_the_median(ratios: list[float]) -> None:
    target = _Scripted(ratios)
    m = target.measure_settled(_mlp(8), (torch.zeros(1, 64),), reference=_mlp(8))
    assert target.calls == 3
    assert m.ratio == sorted(ratios)[1] and m.rounds == 15


def test_settled_cpu_measurement_is_a_real_ratio() -> None:
    m = CpuTarget(rounds=2).measure_settled(_mlp(64), (torch.randn(1, 64),), reference=_mlp(64))
    assert m.ratio is not None and 0.5 < m.ratio < 2.0
    assert m.rounds in (2, 4), "averaged from two measurements, or the median of three"


def test_resolve_target_by_name() -> None:
    target = resolve_target("cpu", threads=2)
    assert isinstance(target, CpuTarget)
    assert target.name == "cpu" and target.threads == 2
    assert "cpu" in TARGETS


def test_resolve_target_passes_a_target_through() -> None:
    target = CpuTarget(threads=1)
    assert resolve_target(target) is target


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="cpu"):
        resolve_target("tpu")


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_below_one_is_a_user_error(threads: int) -> None:
    with pytest.raises(UserInputError, match=f"--threads must be at least 1, got {threads}"):
        resolve_target("cpu", threads=threads)
    with pytest.raises(UserInputError):
        CpuTarget(threads=threads)


def test_target_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Target()  # type: ignore[abstract]


def test_cuda_target_without_a_gpu_says_so() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserInputError, match="--target cuda needs a CUDA GPU"):
        resolve_target("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_target_times_with_events() -> None:
    target = resolve_target("cuda")
    assert target.fingerprint()["runtime"] == "pytorch-eager-cuda"
    m = target.measure(_mlp(1024), (torch.randn(64, 64),), reference=_mlp(64), rounds=3)
    assert m.median_ms > 0 and m.ratio is not None and m.ratio > 0


def test_a_custom_clock_is_what_the_protocol_reads() -> None:
    from autocompress.hardware.timing import measure_latency

    calls = []

    def fixed(fn):
        calls.append(fn())
        return 2e6  # every call "takes" 2 ms

    m = measure_latency(lambda: 1, lambda: 2, rounds=3, warmup_s=0.0, clock=fixed)
    assert m.median_ms == pytest.approx(2.0) and m.ratio == pytest.approx(1.0)
    assert set(calls) == {1, 2}


def test_the_cuda_target_refuses_bit_widths_it_cannot_deploy() -> None:
    from autocompress.hardware.cuda_target import CudaTarget

    cuda = object.__new__(CudaTarget)  # its class's declaration; no GPU needed to read it
    cuda.check_bits({32, 4})
    with pytest.raises(UserInputError, match=r"--target cuda cannot deploy weight_bits 16, 8 \("):
        cuda.check_bits({32, 16, 8, 4})
    CpuTarget(threads=1).check_bits({32, 16, 8, 4})  # the CPU deploys every width
