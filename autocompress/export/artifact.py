"""model.pt2: write a deployable model as a compact `torch.export` program, read it back safely.

`torch.export.save` stores the graph as uncompressed JSON (about 190 kB for a ResNet-20, 18%
of its weights) and, by default, pickled example inputs. Here example inputs are left out and
every entry that deflate shrinks by more than 10% is deflated (`torch.export.load` reads
deflated entries): the JSON (190 kB -> 8 kB) and the weights that are mostly zeros or few
distinct values (sparse, int4 levels held as float), which brings such plans from 1.7-2.1x
their counted compact size to 0.93-1.03x (digits-resnet, joint space); dense float and int8
weights do not compress and stay stored as they are.

A search trial's `size_bytes` is the length of this archive for its candidate, built in
memory by the same functions export uses (`artifact_size_bytes`), not a model of it. Measured
on 20 random joint-space plans per zoo CNN, a count of each tensor in its compact encoding
(`compress.size`) missed the file by up to 19% (digits-cnn) and 18% (digits-resnet): beside
the tensors, the archive holds the deflated graph JSON and one zip header per tensor, 5-8 kB
on digits-cnn (a third to a half of a compressed plan's file) and 17-26 kB on digits-resnet,
and how well an entry deflates depends on the values. Matching within 2% would need that
container counted to within ~150 bytes on digits-cnn, which only writing it does; writing it
costs a `torch.export` trace per trial (bench/size.py; reports/benchmarks/size.md).

Loading refuses any archive entry that `torch.export.load` would unpickle (`use_pickle`
payloads, custom or opaque objects, example inputs): an artifact is data, never code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import unittest.mock
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.config import Plan
from autocompress.errors import AutocompressError
from autocompress.hardware.fold import fold_batchnorm
from autocompress.quiet import copy_graph, import_torchao

PROGRAM_FILE = "model.pt2"

# An archive entry is deflated when that saves more than 10% of it.
_DEFLATE_BELOW = 0.9
_LEVEL = 6
# Node metadata that only helps debugging and would store the user's source paths.
_DEBUG_META = ("stack_trace", "from_node")


class ArtifactError(AutocompressError):
    """An artifact that is missing, malformed or unsafe to load."""


def export_program(
    module: nn.Module, example_inputs: tuple[torch.Tensor, ...]
) -> torch.export.ExportedProgram:
    """`torch.export` a deployable module with a dynamic batch dimension (static if it cannot be).

    Args:
        module: the baked float model, or a converted PT2E graph (`RealizedModel.graph_module`).
        example_inputs: one input batch as positional arguments.

    Returns:
        The exported program.
    """
    module = copy_graph(module)
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.num_batches_tracked = None  # counts training steps; inference never reads it
    # A batch of 1 would be specialized (0/1 specialization): trace with a batch of 2.
    traced = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in example_inputs)
    dims = tuple({0: torch.export.Dim.DYNAMIC} if t.dim() else None for t in example_inputs)
    try:
        return torch.export.export(module, traced, dynamic_shapes=dims)
    except Exception:  # a model that fixes its batch size (e.g. a reshape): static shapes
        return torch.export.export(module, example_inputs)


def program_bytes(program: torch.export.ExportedProgram) -> bytes:
    """The bytes of the .pt2 archive `program` is stored as: compressible entries deflated, no
    example inputs, no debug metadata. `save_program` writes exactly these bytes, and a
    search's trial counts its size as their length (`artifact_size_bytes`).

    Args:
        program: from `deployable_program`; its debug metadata and example inputs are dropped.

    Returns:
        The archive's bytes.
    """
    for node in program.graph.nodes:
        for key in _DEBUG_META:
            node.meta.pop(key, None)
    import torch._export.serde.serialize as serde

    program._example_inputs = None  # else pickled into the archive
    raw = io.BytesIO()
    # torch's serializer canonicalizes a deep copy of the program only to check that a
    # canonical form exists, and drops it: two thirds of the save time on digits-resnet.
    with unittest.mock.patch.object(serde, "canonicalize", lambda program, *_: program):
        torch.export.save(program, raw)
    packed = io.BytesIO()
    with zipfile.ZipFile(raw) as source, zipfile.ZipFile(packed, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            small = len(zlib.compress(data, _LEVEL)) < _DEFLATE_BELOW * len(data)
            method = zipfile.ZIP_DEFLATED if small else zipfile.ZIP_STORED
            target.writestr(info, data, compress_type=method, compresslevel=_LEVEL)
    return packed.getvalue()


def save_program(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write `program` to `path` (a .pt2 file): the bytes of `program_bytes`.

    Args:
        program: from `deployable_program` or `export_program`.
        path: the file to write.
    """
    path.write_bytes(program_bytes(program))


def deployable_program(
    deployable: nn.Module, example_inputs: tuple[torch.Tensor, ...]
) -> torch.export.ExportedProgram:
    """The program model.pt2 holds for a deployable model (`apply.deploy`'s result).

    A converted int8 graph is lifted into a program as it is (`lift.lift_program`; PT2E
    folded its BatchNorms), or traced again where lifting fails; a plain float model has its
    BatchNorms folded and is exported; an eager `RealizedModel` (bf16 or size-only layers, no
    int8) is exported as it runs.

    Args:
        deployable: the baked model, or a `RealizedModel`.
        example_inputs: one input batch at the batch size the study measures (traced with a
            dynamic batch dimension where the model allows it).

    Returns:
        The exported program.
    """
    from autocompress.export.lift import lift_program, liftable

    graph = getattr(deployable, "graph_module", deployable)
    if liftable(graph):
        try:
            return lift_program(graph)
        except Exception:  # a graph the pass does not know (e.g. non-tensor outputs): trace it
            pass
    if graph is deployable:
        graph = fold_batchnorm(graph)
    return export_program(graph, example_inputs)


def artifact_size_bytes(
    model: nn.Module, plan: Plan, example_inputs: tuple[torch.Tensor, ...]
) -> int:
    """Bytes of the model.pt2 that `autocompress export` writes for `model`, measured: the
    archive is built in memory as export builds it (`deploy` without compiling,
    `deployable_program`, `program_bytes`).

    The one difference: int8 activation ranges come from `example_inputs` instead of
    export's calibration batches. They only change the digits of the scales and zero points
    printed in the graph, a few bytes (measured in bench/size.py), and calibrating on four
    training batches cost 0.16 s of the 1.1 s this takes on a digits-resnet int8 plan.

    Args:
        model: a model from `apply(dense, plan, ...)`, fine-tuned as it will be exported.
        plan: its plan.
        example_inputs: the batch the study measures latency with (export traces with it).

    Returns:
        The byte count.
    """
    from autocompress.compress.apply import deploy

    with _no_stack_traces():
        deployable = deploy(model, plan, example_inputs, [example_inputs], compile=False)
        assert isinstance(deployable, nn.Module)
        return len(program_bytes(deployable_program(deployable, example_inputs)))


@contextlib.contextmanager
def _no_stack_traces() -> Iterator[None]:
    """Tracing records no Python stack per node: 15% of a `torch.export` trace's CPU time on
    digits-resnet, and `program_bytes` drops them anyway (`_DEBUG_META`)."""
    import torch.fx.config

    saved = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = saved


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
