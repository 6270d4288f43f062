"""model.pt2 on its own: int8 weights stored as int8 and nothing else, any batch, safe loading."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.compress.program import (
    deployable_program,
    export_program,
    program_bytes,
    save_program,
)
from autocompress.compress.quantize_real import realize
from autocompress.export.artifact import (
    ArtifactError,
    archive_bytes,
    int8_tensors,
    load,
    load_program,
    unused_tensors,
)
from tests.conftest import make_tiny_resnet

LAYERS = ("stem.0", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "fc")


def _int8_graph(example: torch.Tensor) -> nn.Module:
    model = make_tiny_resnet()
    torch.manual_seed(2)
    calibration = [(torch.randn(4, 1, 16, 16),) for _ in range(2)]
    bits = {name: (8, 8) for name in (*LAYERS, "layer2.downsample.0")}
    return realize(model, bits, (example,), calibration, compile=False).graph_module


def test_int8_artifact_stores_int8_weights_and_no_float_copies(
    tmp_path: Path, tiny_input: torch.Tensor
) -> None:
    graph = _int8_graph(tiny_input)
    path = tmp_path / "model.pt2"
    save_program(export_program(graph, (tiny_input,)), path)
    program = load_program(path)

    dense = make_tiny_resnet()
    weights = {
        n: m.weight for n, m in dense.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }
    stored = int8_tensors(program)
    # Every Conv/Linear weight is an int8 tensor of its shape (BatchNorm folded into the conv).
    assert sorted(stored.values()) == sorted(tuple(w.shape) for w in weights.values())
    assert unused_tensors(program) == []
    float_shapes = {
        tuple(t.shape)
        for t in {**program.state_dict, **program.constants}.values()
        if t.is_floating_point()
    }
    assert not float_shapes & {tuple(w.shape) for w in weights.values() if w.dim() > 1}
    int8_bytes = sum(w.numel() for w in weights.values())
    fp32_bytes = 4 * int8_bytes
    # The payload is the int8 weights plus per-channel scales, zero points and biases:
    # far from the fp32 weights it would hold with float copies.
    assert int8_bytes <= archive_bytes(path)["tensors_uncompressed"] < int8_bytes + fp32_bytes / 4

    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(load(path, compile=False)(x), graph(x))


def test_an_int8_graph_is_lifted_into_the_program_export_would_trace(
    tmp_path: Path, tiny_input: torch.Tensor
) -> None:
    from autocompress.compress.lift import liftable
    from autocompress.compress.quantize_real import RealizedModel

    graph = _int8_graph(tiny_input)
    assert liftable(graph) and not liftable(make_tiny_resnet())
    lifted = deployable_program(RealizedModel(graph, {}, compiled=False), (tiny_input,))
    traced = export_program(graph, (tiny_input,))
    # The same stored tensors, by name, dtype and shape, and nothing unused.
    assert unused_tensors(lifted) == []
    assert int8_tensors(lifted) == int8_tensors(traced)
    assert {n: (t.dtype, t.shape) for n, t in lifted.state_dict.items()} == {
        n: (t.dtype, t.shape) for n, t in {**traced.state_dict, **traced.constants}.items()
    }
    path = tmp_path / "model.pt2"
    save_program(lifted, path)
    assert path.read_bytes() == program_bytes(lifted)  # what a trial counts is what is written
    loaded = load(path, compile=False)
    for batch in (1, 5):  # the batch dimension stays dynamic
        x = torch.randn(batch, 1, 16, 16)
        with torch.no_grad():
            assert torch.equal(loaded(x), graph(x))


def test_float_artifact_runs_any_batch_size(tmp_path: Path, tiny_input: torch.Tensor) -> None:
    model = make_tiny_resnet()
    save_program(export_program(model, (tiny_input,)), tmp_path / "model.pt2")
    loaded = load(tmp_path)  # the folder works as well as the file
    for batch in (1, 5):
        x = torch.randn(batch, 1, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    with zipfile.ZipFile(tmp_path / "model.pt2") as archive:
        names = archive.namelist()
        assert not any("stack_trace" in archive.read(n).decode(errors="ignore") for n in names)
        sample = [i for i in archive.infolist() if "sample_inputs" in i.filename]
        assert all(i.file_size == 0 for i in sample)  # no pickled example inputs


def test_sparse_weights_are_stored_deflated_near_their_counted_size(
    tmp_path: Path, tiny_input: torch.Tensor
) -> None:
    from autocompress.compress.apply import apply, bake
    from autocompress.compress.size import compressed_size_bytes
    from autocompress.config import LayerConfig, Plan

    plan = Plan(layers={name: LayerConfig(sparsity=0.9) for name in LAYERS[1:5]})
    baked = bake(apply(make_tiny_resnet(), plan, tiny_input))
    path = tmp_path / "model.pt2"
    save_program(export_program(baked, (tiny_input,)), path)
    on_disk = archive_bytes(path)
    dense_bytes = sum(t.numel() * t.element_size() for t in baked.state_dict().values())
    # 90% zeros: the weights deflate to a fraction of their dense bytes, and the file comes
    # near the count that assumes the compact sparse encoding (far below the dense size).
    assert on_disk["tensors"] < 0.5 * on_disk["tensors_uncompressed"]
    assert on_disk["file"] < 0.6 * dense_bytes
    assert on_disk["file"] < 1.1 * compressed_size_bytes(baked, plan)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load(path)(x), baked(x), rtol=1e-5, atol=1e-5)


class _Payload:
    """Unpickling this writes a marker file: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _tamper(path: Path, marker: Path) -> None:
    """Mark the first weight of a real archive as pickled and replace it with a payload."""
    with zipfile.ZipFile(path) as archive:
        entries = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    config_name = next(n for n in entries if n.endswith("data/weights/model_weights_config.json"))
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    prefix = config_name.rsplit("/", 1)[0]
    buffer = io.BytesIO()
    torch.save(_Payload(marker), buffer)
    entries[f"{prefix}/{first['path_name']}"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def test_load_refuses_pickled_entries_that_torch_export_load_would_run(
    tmp_path: Path, tiny_input: torch.Tensor
) -> None:
    path = tmp_path / "model.pt2"
    save_program(export_program(make_tiny_resnet(), (tiny_input,)), path)
    marker = tmp_path / "pwned"
    _tamper(path, marker)

    with pytest.raises(ArtifactError, match="refusing pickled entry"):
        load(path)
    assert not marker.exists()

    # The check is what stops it: torch.export.load itself unpickles the entry.
    with pytest.raises(Exception):  # noqa: B017 (the payload returns an int, not a tensor)
        torch.export.load(path)
    assert marker.exists()


def test_load_refuses_a_plain_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "model.pt2").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ArtifactError, match=r"not a torch\.export archive"):
        load(tmp_path)
    assert not marker.exists()
    with pytest.raises(ArtifactError, match=r"no model\.pt2"):
        load(tmp_path / "missing")


@pytest.mark.parametrize("damage", [b"{not json", b'{"config": ["a", "list"]}', b"\xff\xfe"])
def test_load_names_a_damaged_archive_entry(
    tmp_path: Path, tiny_input: torch.Tensor, damage: bytes
) -> None:
    path = tmp_path / "model.pt2"
    save_program(export_program(make_tiny_resnet(), (tiny_input,)), path)
    with zipfile.ZipFile(path) as archive:
        entries = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    config_name = next(n for n in entries if n.endswith("data/weights/model_weights_config.json"))
    entries[config_name] = damage
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ArtifactError, match=f"damaged archive entry {config_name}"):
        load(path)
