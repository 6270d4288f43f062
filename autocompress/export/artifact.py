"""model.pt2: read a deployable model's `torch.export` program back safely.

The program is written by `compress.program` (`save_program`: entries that deflate well
deflated, no example inputs), the same bytes a search trial counts as its `size_bytes`.

Loading refuses any archive entry that `torch.export.load` would unpickle (`use_pickle`
payloads, custom or opaque objects, example inputs): an artifact is data, never code.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutocompressError
from autocompress.quiet import import_torchao

PROGRAM_FILE = "model.pt2"


class ArtifactError(AutocompressError):
    """An artifact that is missing, malformed or unsafe to load."""


def check_archive(path: Path) -> None:
    """Refuse a .pt2 archive that would make `torch.export.load` unpickle anything.

    Raises:
        ArtifactError: not a zip archive, or an entry that is pickled (weights or constants
            marked `use_pickle`, custom or opaque objects, legacy `.pt` payloads, example inputs).
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path} is not a torch.export archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            _, _, inner = name.partition("/")
            if inner.startswith("data/sample_inputs/") and info.file_size > 0:
                raise ArtifactError(f"{path}: refusing pickled example inputs ({name})")
            if inner.endswith(".pt") and not inner.startswith("data/sample_inputs/"):
                raise ArtifactError(f"{path}: refusing legacy pickled payload {name}")
            if inner.endswith("_config.json") and inner.startswith(("data/weights/", "data/const")):
                for fqn, meta in _entries(archive, name, path).items():
                    stored = str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))
                    if meta.get("use_pickle") or not stored:
                        raise ArtifactError(f"{path}: refusing pickled entry {fqn!r} in {name}")


def _entries(archive: zipfile.ZipFile, name: str, path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries a weights/constants config of the archive lists, checked for shape.

    Raises:
        ArtifactError: the entry cannot be read, is not JSON, or is not {"config": {fqn: {}}}.
    """
    try:
        config = json.loads(archive.read(name)).get("config", {})
        if not isinstance(config, dict) or not all(isinstance(m, dict) for m in config.values()):
            raise ValueError("expected {'config': {name: {...}}}")
    except (OSError, zipfile.BadZipFile, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: damaged archive entry {name} ({exc})") from None
    return config


def load_program(path: Path) -> torch.export.ExportedProgram:
    """Load an exported program, after `check_archive`, with `torch.export.load` only.

    Raises:
        ArtifactError: see `check_archive`; or the program cannot be deserialized.
    """
    check_archive(path)
    with contextlib.suppress(ImportError):  # registers the ops an int8 program calls
        import_torchao()
    try:
        return torch.export.load(path)
    except Exception as exc:  # a damaged or foreign archive: say which file and why
        raise ArtifactError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None


def has_int8(module: nn.Module) -> bool:
    """True when a (loaded) graph computes some Conv/Linear in int8."""
    from autocompress.compress.quantize_real import quantized_layers

    return bool(quantized_layers(getattr(module, "graph_module", module)))


def load(path: str | os.PathLike[str], *, compile: bool | None = None) -> nn.Module:
    """Load an exported model: a folder written by `autocompress export`, or its model.pt2.

    Uses `torch.export.load` only, after refusing any pickled entry; the original model's
    Python code is not needed.

    Args:
        path: the export folder or the .pt2 file.
        compile: lower with inductor (real int8 kernels; the first call per input shape
            compiles, seconds); None: compile when the model has int8 layers.

    Returns:
        A runnable module taking the model's inputs (inference only, no gradients).

    Raises:
        ArtifactError: no model.pt2 there, or an unsafe or damaged archive.
    """
    from autocompress.compress.quantize_real import RealizedModel

    file = Path(path)
    if file.is_dir():
        file = file / PROGRAM_FILE
    if not file.is_file():
        raise ArtifactError(f"no {PROGRAM_FILE} at {path}; give an export folder or a .pt2 file")
    module = load_program(file).module()
    if compile is None:
        compile = has_int8(module)
    # The wrapper gives the unlifted graph the eval()/train() calls metrics and timing make
    # (an ExportedProgram's module refuses them) and runs it without gradients.
    return RealizedModel(module, {}, compiled=compile)


def archive_bytes(path: Path) -> dict[str, int]:
    """How the bytes of a .pt2 file divide: the whole file, tensor payloads, everything else.

    Returns:
        ``{"file", "tensors", "tensors_uncompressed", "overhead"}`` in bytes; "tensors" is what
        the tensor entries take on disk (deflated where that paid), "overhead" the rest.
    """
    total = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        entries = [
            info
            for info in archive.infolist()
            if "/data/weights/weight_" in info.filename
            or "/data/constants/tensor_" in info.filename
        ]
    stored = sum(info.compress_size for info in entries)
    return {
        "file": total,
        "tensors": stored,
        "tensors_uncompressed": sum(info.file_size for info in entries),
        "overhead": total - stored,
    }


def unused_tensors(program: torch.export.ExportedProgram) -> list[str]:
    """Parameters, buffers and constants the program stores but no node reads.

    An int8 artifact must not carry the fp32 weights its int8 ones were made from.

    Returns:
        Their names (empty for a clean artifact).
    """
    read = {node.name for node in program.graph.nodes if node.op == "placeholder" and node.users}
    return sorted(
        spec.target
        for spec in program.graph_signature.input_specs
        if spec.target is not None and spec.arg.name not in read
    )


def int8_tensors(program: torch.export.ExportedProgram) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every int8 tensor the program stores (the quantized weights)."""
    tensors = {**program.state_dict, **program.constants}
    return {
        name: tuple(t.shape)
        for name, t in tensors.items()
        if isinstance(t, torch.Tensor) and t.dtype == torch.int8
    }
