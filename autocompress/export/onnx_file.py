"""model.onnx: the deployable graph for ONNX Runtime, written only when ORT reproduces it.

Float plans (pruned, factorized, sparse as zeros) export as plain ONNX; static int8 layers
export from the converted PT2E graph as QuantizeLinear/DequantizeLinear pairs (uint8
activations per tensor, int8 weights per output channel), which ORT fuses into int8 kernels.
Measured on digits-resnet with every layer (8, 8): 46 DequantizeLinear, 24 QuantizeLinear,
21 Conv. A plan ORT cannot run (e.g. bf16 compute) is skipped with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.quiet import quiet_onnx_export

ONNX_FILE = "model.onnx"
MIN_TOP1_AGREEMENT = 0.99


def _inputs(x: Any) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def write_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    *,
    val_inputs: Sequence[Any],
    reference_outputs: Sequence[torch.Tensor],
    threads: int = 1,
) -> dict[str, Any]:
    """Export `module` to ONNX, run it in ONNX Runtime on validation inputs, keep it if it agrees.

    Args:
        module: the deployable graph (baked float model or converted int8 graph).
        example_inputs: one input batch as positional arguments.
        path: where model.onnx goes; removed again when the check fails.
        val_inputs: validation batches (a tensor or a tuple each).
        reference_outputs: the PyTorch candidate's outputs on those batches.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``{"written": bool, "reason": str | None, "top1_agreement": float | None,
        "max_abs_diff": float | None, "opset": int | None}``.
    """
    result: dict[str, Any] = {
        "written": False,
        "reason": None,
        "top1_agreement": None,
        "max_abs_diff": None,
        "opset": None,
    }
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        result["reason"] = f"ONNX not installed ({exc.name}): pip install 'autocompress[onnx]'"
        return result
    traced = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in example_inputs)
    dims = tuple({0: torch.export.Dim.DYNAMIC} if t.dim() else None for t in example_inputs)
    try:
        with warnings.catch_warnings(), quiet_onnx_export():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, traced, dynamo=True, external_data=False, dynamic_shapes=dims, verbose=False
            )
        assert program is not None
        program.save(str(path))
        result["opset"] = next(
            (o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")),
            None,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        agree = total = 0
        worst = 0.0
        for x, ref in zip(val_inputs, reference_outputs, strict=True):
            feed = {n: t.numpy() for n, t in zip(names, _inputs(x), strict=True)}
            out = torch.from_numpy(session.run(None, feed)[0])
            worst = max(worst, float((out - ref).abs().max()))
            if ref.dim() == 2:
                agree += int((out.argmax(1) == ref.argmax(1)).sum())
                total += ref.shape[0]
    except Exception as exc:  # the exporter and ORT fail in many ways; the reason is what matters
        path.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        result["reason"] = f"ONNX export or ONNX Runtime failed: {type(exc).__name__}: {first}"
        return result
    result["max_abs_diff"] = worst
    result["top1_agreement"] = agree / total if total else None
    if total and agree / total < MIN_TOP1_AGREEMENT:
        path.unlink(missing_ok=True)
        result["reason"] = (
            f"ONNX Runtime agrees with the PyTorch model on only {agree / total:.1%} of "
            f"validation top-1 (needs {MIN_TOP1_AGREEMENT:.0%}); model.onnx not written"
        )
        return result
    result["written"] = True
    return result
