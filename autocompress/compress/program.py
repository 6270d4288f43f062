"""model.pt2's program: a deployable model as a compact `torch.export` program, and its bytes.

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

`export.artifact` reads such a file back.
"""

from __future__ import annotations

import contextlib
import io
import unittest.mock
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from autocompress.config import Plan
from autocompress.hardware.fold import fold_batchnorm
from autocompress.quiet import copy_graph

# An archive entry is deflated when that saves more than 10% of it.
_DEFLATE_BELOW = 0.9
_LEVEL = 6
# Node metadata that only helps debugging and would store the user's source paths.
_DEBUG_META = ("stack_trace", "from_node")


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
    from autocompress.compress.lift import lift_program, liftable

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
