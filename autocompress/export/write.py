"""`autocompress export`: rebuild a study's candidate, write it as a deployable artifact, verify it.

The folder holds model.pt2 (torch.export program with the real compressed layers), model.onnx
where ONNX Runtime reproduces it, plan.json (replayable with `autocompress.apply`),
metrics.json and README.txt. Everything is written into a hidden folder beside `out` and
renamed at the end, so a refused or failed export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autocompress.compress.program import deployable_program, save_program
from autocompress.errors import AutocompressError, UserInputError
from autocompress.export.artifact import (
    PROGRAM_FILE,
    archive_bytes,
    has_int8,
    load,
    load_program,
    unused_tensors,
)
from autocompress.export.verify import MAX_ACCURACY_DIFF, compare_outputs, outputs
from autocompress.optimize.record import read

SIZE_TOLERANCE = 0.02


class ExportError(AutocompressError):
    """The artifact was built but does not reproduce the study's candidate (exit code 1)."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and measured."""

    out: Path
    trial: int
    files: list[str]
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _prepare_out(out: Path) -> Path:
    """Refuse an output that would overwrite something; return a fresh temp folder beside it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(
            f"--out {out} already exists and is not an empty folder; choose a new folder"
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(parent, out.name)
        # The staging folder names its process, so that one a killed export left is known.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", dir=parent))
        # mkdtemp makes it private (0700); the export folder it becomes is an ordinary one.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        return staging
    except OSError as exc:
        raise UserInputError(
            f"cannot write under {parent} ({exc.strerror or exc}); choose a writable --out"
        ) from None


def _remove_abandoned_staging(parent: Path, name: str) -> None:
    """Delete the staging folders of exports to `name` whose process is gone (killed with -9:
    no `finally` ran). A folder of a live process, or not named as `_prepare_out` names
    them (`.NAME.PID.xxxxxxxx`), is left alone."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[a-z0-9_]{{8}}")
    for folder in parent.glob(f".{name}.*"):
        found = pattern.fullmatch(folder.name)
        if found is None or not folder.is_dir():
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another user's live process
            continue


def _versions(study_versions: dict[str, str]) -> dict[str, Any]:
    import importlib.metadata as md

    now = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in (
        "torchao", "torch-pruning", "optuna", "onnx", "onnxruntime", "onnxscript", "openvino",
        "nncf",
    ):  # fmt: skip
        with contextlib.suppress(md.PackageNotFoundError):
            now[dist] = md.version(dist)
    return {"export": now, "search": study_versions}


def _readme(trial: int, study: str, onnx_written: bool, int8: bool, openvino: bool) -> str:
    lines = [
        f"Compressed model: trial {trial} of autocompress study {study!r}.",
        "",
        "Files: model.pt2 (torch.export program; the original model's code is not needed),",
        "plan.json (the plan; replay it on the dense model with autocompress.apply), metrics.json",
        "(accuracy, latency measured at export, size, target fingerprint, library versions)"
        + (", model.onnx (ONNX Runtime)." if onnx_written else "."),
        "",
        "Load with autocompress:",
        "    import autocompress",
        "    model = autocompress.load('THIS_FOLDER')   # int8 layers are compiled on first call",
        "    y = model(x)",
        "",
        "or with torch alone (no pickle is read):",
    ]
    if int8:
        lines.append("    import torchao.quantization.pt2e  # registers the int8 ops first")
    lines += [
        "    import torch",
        "    model = torch.export.load('THIS_FOLDER/model.pt2').module()",
    ]
    if int8:
        lines += [
            "    # for real int8 kernels: torch.compile(model) under",
            "    # torch._inductor.config.patch(freezing=True)",
        ]
    if onnx_written:
        lines += [
            "",
            "ONNX Runtime:",
            "    import onnxruntime as ort",
            "    session = ort.InferenceSession('THIS_FOLDER/model.onnx')",
            "    y = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]",
        ]
    if openvino:
        lines += [
            "",
            "OpenVINO (model.xml + model.bin; keep f32 precision, the CPU's default may be bf16):",
            "    import openvino as ov",
            "    model = ov.Core().compile_model('THIS_FOLDER/model.xml', 'CPU',",
            "                                    {'INFERENCE_PRECISION_HINT': 'f32'})",
            "    y = model(x.numpy())[0]",
        ]
    return "\n".join(lines) + "\n"


def export(
    study: str,
    *,
    out: str | os.PathLike[str],
    trial: int | None = None,
    pick: str | None = None,
    storage: str | None = None,
    model: str | None = None,
    task: str | None = None,
    train_threads: int | None = None,
) -> ExportResult:
    """Export one candidate of a study as a deployable, verified artifact.

    Args:
        study: the study name.
        out: a new (or empty) folder to write.
        trial: the trial number to export; exactly one of `trial` and `pick`.
        pick: "fastest", "smallest" or "most-accurate" among the feasible front.
        storage: the study's storage URL; None for the default.
        model: `--model pkg.mod:factory` when the study's model is not in the zoo.
        task: `--task` likewise.
        train_threads: threads for the replayed fine-tune; None: the trial's own (exact).

    Returns:
        The folder, the trial, the files written and metrics.json's content.

    Raises:
        UserInputError: unknown study or trial, nothing feasible to pick, or an unusable `out`.
        ExportError: the reloaded artifact's accuracy or outputs do not match (nothing written).
    """
    from autocompress.export.onnx_file import ONNX_FILE, write_onnx
    from autocompress.export.rebuild import pick_note, rebuild, select_trial, study_figures
    from autocompress.export.runtime_file import write_runtime_artifact
    from autocompress.hardware.targets import resolve_target
    from autocompress.optimize.study import load_study

    if train_threads is not None and train_threads < 1:
        raise UserInputError(f"--train-threads must be at least 1, got {train_threads}")
    the_study = load_study(study, storage)
    chosen = select_trial(the_study, trial=trial, pick=pick)
    identity = read(the_study).identity
    threads = int(identity.get("threads", 1))
    target = resolve_target(identity.get("target", "cpu"), threads=threads)
    out_path = Path(out)
    work = _prepare_out(out_path)
    try:
        figures = study_figures(the_study, chosen)
        built = rebuild(the_study, chosen, model=model, task=task, train_threads=train_threads)
        program_path = work / PROGRAM_FILE
        # The same program, written the same way, as the trial counted for its size_bytes.
        save_program(deployable_program(built.deployable, built.latency_inputs), program_path)
        # model.pt2 is timed in PyTorch; a runtime target's own artifact is timed below.
        eager = target if target.runtime == "pytorch" else resolve_target("cpu", threads=threads)
        metrics, failures = _verify(the_study, chosen, built, program_path, eager)
        metrics["study_latency_ms"] = figures.latency_ms
        metrics["study_latency_source"] = "measured" if figures.measured else "predicted"
        metrics["on_front"] = figures.on_front
        val_inputs = [x for x, _ in built.task.val]
        if target.runtime == "pytorch" or target.artifact != ONNX_FILE:
            onnx = write_onnx(
                built.graph,
                built.latency_inputs,
                work / ONNX_FILE,
                val_inputs=val_inputs,
                reference_outputs=outputs(built.deployable, val_inputs),
                threads=target.threads,
            )
        if target.runtime != "pytorch":
            runtime, runtime_failures = write_runtime_artifact(
                target,
                built,
                work,
                study_accuracy=chosen.user_attrs["accuracy"],
                dense_ms=read(the_study).dense().latency_ms,
                study_to_dense=figures.to_dense,
            )
            failures += runtime_failures
            metrics["runtime"] = runtime
            # The runtime's artifact is what the study scored and timed (model.pt2 aside).
            metrics["pt2_accuracy"] = metrics["accuracy"]
            metrics["accuracy"] = runtime["accuracy"]
            metrics["pt2_latency_ratio"] = metrics["latency_ratio"]
            metrics["latency_ms"] = runtime["latency_ms"]
            metrics["latency_ratio"] = runtime["latency_ratio"]
            metrics["measurement"] = runtime["measurement"]
            if target.artifact == ONNX_FILE:  # the runtime's graph is the model.onnx
                onnx = {
                    "written": True,
                    "reason": None,
                    "top1_agreement": runtime["outputs"]["top1_agreement"],
                    "max_abs_diff": runtime["outputs"]["max_abs_diff"],
                    "opset": None,
                }
        metrics["onnx"] = onnx
        metrics["pick"] = pick
        if failures:
            raise ExportError("export verification failed: " + "; ".join(failures))
        (work / "plan.json").write_text(json.dumps(built.plan.to_dict(), indent=2) + "\n")
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (work / "README.txt").write_text(
            _readme(
                chosen.number,
                study,
                onnx["written"],
                bool(metrics["int8"]),
                openvino=target.runtime == "openvino",
            )
        )
        try:
            if out_path.exists():
                out_path.rmdir()  # empty when checked above; not if another export filled it
            work.rename(out_path)
        except OSError as exc:
            raise UserInputError(
                f"--out {out_path} was written by something else while this export ran "
                f"({exc.strerror or exc}); nothing of this export was kept, choose a new folder"
            ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    notes = figures.notes(chosen.number)
    narrowed = pick_note(the_study, pick)
    if narrowed is not None:
        notes.insert(0, narrowed)
    if not onnx["written"]:
        notes.append(f"model.onnx not written: {onnx['reason']}")
    notes += metrics["size"]["notes"]
    versus = metrics["latency_vs_in_memory_ratio"]
    if versus is not None and versus > 1.1:
        # Measured on digits-resnet: 1.26x, with or without input guards, 1.22x compiled.
        notes.append(
            f"the loaded program takes {versus:.2f}x the time of the in-memory model the search "
            "timed (an exported graph dispatches each aten op from Python)"
        )
    return ExportResult(
        out=out_path,
        trial=chosen.number,
        files=sorted(p.name for p in out_path.iterdir()),
        metrics=metrics,
        notes=notes,
    )


def _verify(
    study: Any, trial: Any, built: Any, program_path: Path, target: Any
) -> tuple[dict[str, Any], list[str]]:
    """Reload the written program; re-run the metric, the outputs check and a latency measurement.

    Returns:
        metrics.json's figures and the failed checks (empty when the artifact verifies).
    """
    attrs = trial.user_attrs
    the_record = read(study)
    baseline = the_record.dense()
    loaded = load(program_path)
    int8 = has_int8(loaded)
    failures = []

    val_inputs = [x for x, _ in built.task.val]
    check = compare_outputs(
        outputs(loaded, val_inputs), outputs(built.deployable, val_inputs), int8=int8
    )
    if not check.passed:
        failures.append(check.reason())
    accuracy = float(built.task.metric(loaded, built.task.val))
    # On a runtime target the study's accuracy is the runtime's; model.pt2 is the candidate.
    study_accuracy = attrs.get("candidate_accuracy", attrs["accuracy"])
    if abs(accuracy - study_accuracy) > MAX_ACCURACY_DIFF:
        failures.append(
            f"{the_record.metric_name} of the exported model is "
            f"{accuracy:.4f}, the study's is {study_accuracy:.4f} (rebuilt candidate "
            f"before export: {built.candidate_accuracy:.4f}); allowed difference "
            f"{MAX_ACCURACY_DIFF}"
        )

    measurement = target.measure(loaded, built.latency_inputs, reference=built.dense)
    ratio = float(measurement.ratio)
    # The artifact as loaded against the in-memory build the search timed, interleaved: the
    # cost of the exported form itself, free of the machine's drift between search and export.
    versus = target.measure(loaded, built.latency_inputs, reference=built.deployable)
    fingerprint = target.fingerprint()

    program = load_program(program_path)
    on_disk = archive_bytes(program_path)
    unused = unused_tensors(program)
    if unused:
        failures.append(f"model.pt2 stores tensors no node reads: {', '.join(unused[:5])}")
    recorded = attrs["size_bytes"]
    within = abs(on_disk["file"] - recorded) <= SIZE_TOLERANCE * on_disk["file"]
    size_notes = []
    if not within:
        if "size_source" not in attrs:
            why = (
                "the study was searched before size_bytes counted the model.pt2 itself (it "
                "counted compact tensors and torch.save's container)"
            )
        else:
            why = attrs.get("size_note") or (
                "the trial counted this same archive for the weights and calibration it had; "
                "the rebuild's differ (a changed torch/torchao version, or a fine-tune that "
                "did not replay exactly)"
            )
        size_notes.append(
            f"model.pt2 is {on_disk['file']} bytes, {on_disk['file'] / recorded:.3f}x the "
            f"study's size_bytes {recorded}: {why}"
        )
    metrics = {
        "study": study.study_name,
        "trial": trial.number,
        "metric_name": the_record.metric_name,
        "accuracy": accuracy,
        "study_accuracy": attrs["accuracy"],
        "rebuilt_accuracy": built.candidate_accuracy,
        "baseline_accuracy": baseline.accuracy,
        "latency_ms": ratio * baseline.latency_ms,
        "latency_ratio": ratio,
        "baseline_latency_ms": baseline.latency_ms,
        "measurement": measurement.to_dict(),
        "latency_vs_in_memory_ratio": versus.ratio,
        "size_bytes": recorded,
        # What a trial would record for the rebuilt candidate: the archive just written.
        "size_bytes_now": on_disk["file"],
        "artifact_bytes": on_disk["file"],
        "size": {
            "tensor_bytes": on_disk["tensors"],
            "tensor_bytes_uncompressed": on_disk["tensors_uncompressed"],
            "overhead_bytes": on_disk["overhead"],
            "artifact_vs_size_bytes": on_disk["file"] / recorded,
            "within_2pct": within,
            "unused_tensors": unused,
            "notes": size_notes,
        },
        "int8": int8,
        "layers": dict(getattr(built.deployable, "layers", {})),
        "outputs": check.to_dict(),
        "finetune_steps": built.finetune_steps,
        "train_threads": built.train_threads,
        "identity": dict(the_record.identity),
        "target_fingerprint": fingerprint,
        "study_fingerprint": dict(the_record.fingerprint),
        "same_target": fingerprint == the_record.fingerprint,
        "versions": _versions(dict(the_record.versions)),
    }
    return metrics, failures
