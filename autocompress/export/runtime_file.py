"""The runtime artifact of a runtime target's export: the plan realized in the runtime (the graph
the search timed), written in the runtime's format, loaded back from disk and checked there.

`cpu:onnxruntime` writes model.onnx (static QDQ int8 where the plan says so); `cpu:openvino`
writes model.xml + model.bin (OpenVINO IR, fp32 weights where float, NNCF int8 elsewhere).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from autocompress.export.verify import MAX_ACCURACY_DIFF, compare_outputs, outputs


def write_runtime_artifact(
    target: Any,
    built: Any,
    folder: Path,
    *,
    study_accuracy: float,
    dense_ms: float,
    study_to_dense: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Deploy the rebuilt candidate in the target's runtime, save it, reload it and check it.

    Args:
        target: a `RuntimeTarget`.
        built: the rebuilt candidate (`export.rebuild.Rebuilt`).
        folder: where the artifact goes.
        study_accuracy: the trial's accuracy in the study.
        dense_ms: the study's dense latency (the measured ratio is scaled by it).
        study_to_dense: the ratio to the dense model of the reference the study timed the
            candidate against (`record.reference_to_dense`); the file's time against the same
            reference is carried to the dense model by it. None: by the ratio timed here
            (four timings of the twin against the dense model, `Target.twin_ratio`).

    Returns:
        (figures for metrics.json under "runtime", the failed checks).
    """
    from autocompress.optimize.objectives import deploy_as_exported

    deployed = deploy_as_exported(
        target, built.task, built.candidate, built.plan, built.latency_inputs
    )
    path = folder / target.artifact
    deployed.save(path)
    loaded = target.load_artifact(path)
    val_inputs = [x for x, _ in built.task.val]
    # The file holds the in-memory graph exactly: outputs agree to float rounding.
    check = compare_outputs(outputs(loaded, val_inputs), outputs(deployed, val_inputs), int8=False)
    accuracy = float(built.task.metric(loaded, built.task.val))
    failures = []
    if not check.passed:
        failures.append(f"{target.artifact} reloaded: {check.reason()}")
    if abs(accuracy - study_accuracy) > MAX_ACCURACY_DIFF:
        failures.append(
            f"{target.artifact} in {target.runtime} scores {accuracy:.4f}, the study's candidate "
            f"{study_accuracy:.4f} (allowed difference {MAX_ACCURACY_DIFF})"
        )
    # Settled like the study's candidates, against the reference the study timed it against
    # (`Target.reference_for`), and carried to the dense model by the study's own ratio of that
    # reference: the fp32 dense model is memory-bound, and alone in one process it ran 1.20 to
    # 1.63 ms on effnet-fmnist (0.886 ms another hour), so a ratio re-timed here would move the
    # figure by more than the file's own speed does. The in-memory graph, interleaved, tells
    # the file's speed from the drift between this run and the study's.
    reference = target.reference_for(
        built.dense, deployed, built.latency_inputs, to_dense=study_to_dense
    )
    timed = target.measure_settled(loaded, built.latency_inputs, reference=reference.model)
    versus = target.measure_settled(loaded, built.latency_inputs, reference=deployed)
    assert timed.ratio is not None and versus.ratio is not None
    to_dense = reference.to_dense
    measurement = replace(timed, ratio=timed.ratio * to_dense, to_dense=to_dense)
    # OpenVINO IR is model.xml plus its weights in model.bin; model.pt2 shares the stem.
    written = [path, *([path.with_suffix(".bin")] if path.suffix == ".xml" else [])]
    figures = {
        "runtime": target.runtime,
        "file": target.artifact,
        "files": sorted(p.name for p in written),
        "bytes": sum(p.stat().st_size for p in written),
        "accuracy": accuracy,
        "int8_nodes": len(deployed.int8_nodes),
        "layers": dict(deployed.layers),
        "outputs": check.to_dict(),
        "latency_ms": measurement.ratio * dense_ms,
        "latency_ratio": measurement.ratio,
        "latency_vs_in_memory_ratio": versus.ratio,
        # the reference's ratio to the dense model: the study's, else timed here (1.0: the
        # reference is the dense model itself)
        "reference_to_dense": to_dense,
        "measurement": measurement.to_dict(),
    }
    return figures, failures
