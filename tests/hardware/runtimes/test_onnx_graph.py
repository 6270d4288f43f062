"""The ONNX graph both runtime targets start from: single layers written by hand agree with
PyTorch, and a model's graph nodes are found by their layer names (factorized layers too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply, bake
from autocompress.config import LayerConfig, Plan
from autocompress.hardware.runtimes.onnx_graph import (
    WEIGHT_OPS,
    int8_region,
    layer_nodes,
    to_onnx,
)
from autocompress.task import fit_to_shapes
from tests.conftest import make_tiny_resnet

pytest.importorskip("onnxruntime")


def _run(graph, *inputs: torch.Tensor) -> torch.Tensor:
    from autocompress.hardware.runtimes.onnxruntime import OrtModel

    return OrtModel(graph, threads=1).run(inputs)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 9, 9)),
        (nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False), (1, 8, 6, 6)),
        (nn.Conv2d(4, 6, (1, 3), dilation=(1, 2), padding="valid"), (1, 4, 5, 9)),
        (nn.Conv1d(4, 5, 5, padding=2), (3, 4, 20)),
        (nn.Linear(12, 7), (4, 12)),
        (nn.Linear(12, 7, bias=False), (2, 5, 12)),
        (nn.Linear(12, 7), (2, 5, 12)),
    ],
)
def test_a_single_layer_graph_computes_what_the_layer_does(
    layer: nn.Module, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    out = _run(to_onnx(layer, (x,)), x)
    with torch.no_grad():
        assert torch.allclose(out, layer(x), atol=1e-5, rtol=1e-4)
    # The batch dimension is free: the same graph runs another batch size.
    x3 = torch.randn(3, *shape[1:])
    with torch.no_grad():
        assert torch.allclose(_run(to_onnx(layer, (x,)), x3), layer(x3), atol=1e-5, rtol=1e-4)


def test_layer_nodes_finds_every_conv_and_linear_by_module_name() -> None:
    model = make_tiny_resnet()
    x = torch.randn(1, 1, 16, 16)
    graph = to_onnx(model, (x,))
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    found = layer_nodes(graph, names)
    assert all(len(nodes) == 1 for nodes in found.values()), found
    # BatchNorm was folded, and each weight node is named after its layer, not after the BN.
    weight_nodes = [n.name for n in graph.graph.node if n.op_type in WEIGHT_OPS]
    assert sorted(weight_nodes) == sorted(n for nodes in found.values() for n in nodes)
    assert not any(n.op_type == "BatchNormalization" for n in graph.graph.node)


class _SamePadConv(nn.Conv2d):
    """A library's convolution that pads in its own forward, as EfficientNet-Lite0's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, [1, 1, 1, 1])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0)


class _SubclassNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _SamePadConv(1, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.stem(x))).mean((2, 3)))


def test_a_subclassed_convolution_keeps_its_name_and_its_batchnorm_is_folded() -> None:
    torch.manual_seed(0)
    model = _SubclassNet().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1, 10, 10)
    graph = to_onnx(model, (x[:1],))
    # torch.fx's own fuse skips the subclass; the exporter then named the fused Conv after
    # the BatchNorm, and an int8 plan on EfficientNet-Lite0 found none of its layers.
    found = layer_nodes(graph, ["stem", "head"])
    assert len(found["stem"]) == 1 and len(found["head"]) == 1, found
    assert not any(n.op_type == "BatchNormalization" for n in graph.graph.node)
    with torch.no_grad():
        assert torch.allclose(_run(graph, x), model(x), atol=1e-5, rtol=1e-4)


def test_a_factorized_layer_maps_to_both_of_its_nodes() -> None:
    model = make_tiny_resnet()
    x = torch.randn(1, 1, 16, 16)
    plan = Plan(layers={"layer2.conv2": LayerConfig(rank_ratio=0.25)})
    graph = to_onnx(bake(apply(model, plan, (x,))), (x,))
    found = layer_nodes(graph, ["layer2.conv2", "layer2.conv1"])
    assert len(found["layer2.conv2"]) == 2
    assert len(found["layer2.conv1"]) == 1


def test_int8_region_spreads_over_ops_whose_inputs_are_all_int8() -> None:
    model = make_tiny_resnet()
    x = torch.randn(1, 1, 16, 16)
    graph = to_onnx(model, (x,))
    nodes = {n.name: n for n in graph.graph.node}
    found = layer_nodes(graph, ["layer2.conv1"])
    region = int8_region(graph, found["layer2.conv1"])
    # conv1's ReLU follows it; conv2 (float) and what it feeds stay out.
    assert [nodes[n].op_type for n in region] == ["Conv", "Relu"]
    every = [n.name for n in graph.graph.node if n.op_type in WEIGHT_OPS]
    everything = int8_region(graph, every)
    kinds = {nodes[n].op_type for n in everything}
    assert {"Conv", "Gemm", "Relu", "Add"} <= kinds


def test_calibration_batches_are_padded_or_cut_to_the_graphs_static_sizes() -> None:
    tokens = np.array([[101, 7, 102], [101, 102, 0]])
    mask = np.ones((2, 3), dtype=np.int64)
    short, cut = fit_to_shapes([tokens, mask], [[None, 5], [None, 2]])
    assert short.tolist() == [[101, 7, 102, 0, 0], [101, 102, 0, 0, 0]]  # padded with zeros
    assert cut.shape == (2, 2)
    (same,) = fit_to_shapes([tokens], [[None, None]])  # dynamic: left as it is
    assert same is tokens


class _Embedder(nn.Module):
    """Token ids and a mask of a fixed length, like a text model exported at 128 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(self.embed(ids)) * mask.unsqueeze(-1)
        return hidden.sum(1) / mask.sum(1, keepdim=True)


def test_int8_calibrates_on_batches_shorter_than_the_exported_sequence() -> None:
    from autocompress.hardware.runtimes.onnxruntime import quantize

    torch.manual_seed(0)
    model = _Embedder().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    calibration = [
        (torch.randint(1, 50, (4, n)), torch.ones(4, n, dtype=torch.long)) for n in (7, 9)
    ]
    graph = to_onnx(model, example)
    int8 = _run(quantize(graph, calibration, nodes=None), *example)
    assert torch.allclose(int8, model(*example), atol=0.1)


def test_the_standard_int8_of_a_graph_without_convolutions_is_dynamic() -> None:
    from autocompress.hardware.runtime_targets import OrtCpuTarget

    torch.manual_seed(0)
    model = _Embedder().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    int8 = OrtCpuTarget().quantize_graph(to_onnx(model, example), [], None)
    import onnx

    ops = {node.op_type for node in onnx.load_from_string(int8.model_bytes).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops, ops
    assert "QuantizeLinear" not in ops  # no static activation ranges: nothing to calibrate
    assert torch.allclose(int8.run(example), model(*example), atol=0.1)
