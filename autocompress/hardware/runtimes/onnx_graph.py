"""A PyTorch model as an ONNX graph, and which graph nodes belong to which of its layers.

Both runtime targets start here: ONNX Runtime runs the graph, OpenVINO converts it. BatchNorm
is folded into the convolutions in PyTorch first: the exporter folds it too, but then names the
fused Conv after the BatchNorm, and a layer's nodes are found by their module name scopes.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.hardware.fold import fold_batchnorm
from autocompress.quiet import quiet_onnx_export

OPSET = 20
# Nodes that hold a layer's weights; a layer's int8 or float choice is made on these.
WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul"})
# Nodes that run in int8 when every input they compute on comes from int8 nodes: the
# activations, pooling and shape ops between two int8 layers (a residual Add included).
FOLLOWER_OPS = frozenset(
    {
        "Relu", "Clip", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
    }
)  # fmt: skip


def to_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """Export a float model to ONNX with a dynamic batch dimension.

    A bare Conv1d/Conv2d/Linear is written directly (`layer_graph`), in milliseconds; any other
    model goes through `torch.onnx.export(dynamo=True)` after folding its BatchNorms.

    Args:
        module: the float model (not modified; evaluated in eval mode).
        inputs: one input batch as positional arguments.

    Returns:
        The `onnx.ModelProto`.
    """
    import onnx

    if type(module) in (nn.Conv1d, nn.Conv2d, nn.Linear):
        return layer_graph(module, inputs[0])
    was_training = module.training
    folded = fold_batchnorm(module.eval())
    # A batch of 1 would let the exporter specialise the batch dimension to a constant.
    traced = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in inputs)
    dims = tuple({0: torch.export.Dim.DYNAMIC} if t.dim() else None for t in inputs)
    try:
        with warnings.catch_warnings(), quiet_onnx_export():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                folded,
                traced,
                dynamo=True,
                external_data=False,
                dynamic_shapes=dims,
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        module.train(was_training)
    assert program is not None
    return onnx.load_from_string(program.model_proto.SerializeToString())


def layer_graph(layer: nn.Module, x: torch.Tensor) -> Any:
    """One Conv1d/Conv2d/Linear as an ONNX graph with its own weights (batch dimension dynamic).

    Args:
        layer: the layer.
        x: an input of the right shape.

    Returns:
        The `onnx.ModelProto`: Conv, Gemm (2-D input) or MatMul + Add.
    """
    from onnx import TensorProto, helper, numpy_helper

    weight = layer.weight.detach().float().numpy()
    bias = None if layer.bias is None else layer.bias.detach().float().numpy()
    with torch.no_grad():
        y = layer(x)
    in_shape = ["batch", *x.shape[1:]]
    out_shape = ["batch", *y.shape[1:]]
    inits = [numpy_helper.from_array(weight, "weight")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    names = ["input", "weight"] + (["bias"] if bias is not None else [])
    if isinstance(layer, nn.Linear) and x.dim() == 2:
        nodes = [helper.make_node("Gemm", names, ["output"], name="layer", transB=1)]
    elif isinstance(layer, nn.Linear):
        inits[0] = numpy_helper.from_array(np.ascontiguousarray(weight.T), "weight")
        product = "mm" if bias is not None else "output"
        nodes = [helper.make_node("MatMul", ["input", "weight"], [product], name="layer")]
        if bias is not None:
            nodes.append(helper.make_node("Add", ["mm", "bias"], ["output"], name="layer_bias"))
    else:
        assert isinstance(layer, nn.Conv1d | nn.Conv2d)
        pads = _pads(layer, x)
        nodes = [
            helper.make_node(
                "Conv",
                names,
                ["output"],
                name="layer",
                kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride),
                dilations=list(layer.dilation),
                group=layer.groups,
                pads=pads,
            )
        ]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        inits,
    )
    # IR 10 goes with opset 20; the onnx package would stamp its newest, which ORT may not read.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)


def _pads(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> list[int]:
    """ONNX pads (all begins, then all ends) for a convolution's PyTorch padding."""
    if conv.padding == "valid":
        return [0] * (2 * len(conv.kernel_size))
    if conv.padding == "same":
        total = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    assert not isinstance(conv.padding, str)
    return list(conv.padding) * 2


def _scopes(node: Any) -> list[str]:
    """The module names a node was exported from, outermost first ([] when not recorded)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return list(ast.literal_eval(prop.value))
            except (ValueError, SyntaxError):
                return []
    return []


def layer_nodes(model: Any, layers: Iterable[str]) -> dict[str, list[str]]:
    """The weight nodes (Conv, Gemm, MatMul) of each named layer in an exported graph.

    A node belongs to a layer when the layer's module name is among the node's name scopes, so
    a factorized layer (a Sequential of two) gets both of its nodes.

    Args:
        model: an `onnx.ModelProto` from `to_onnx`.
        layers: torch module names.

    Returns:
        ``{layer: [node names]}``; a layer with no node maps to [].
    """
    found: dict[str, list[str]] = {name: [] for name in layers}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for scope in _scopes(node):
            if scope in found:
                found[scope].append(node.name)
    return found


def int8_region(model: Any, seeds: Sequence[str]) -> list[str]:
    """The nodes to quantize for int8 weight nodes `seeds`: the seeds, then every follower op
    (activation, pooling, residual Add, reshape) all of whose computed inputs are in the region.

    Args:
        model: an `onnx.ModelProto`.
        seeds: names of the weight nodes to run in int8.

    Returns:
        Node names in graph order.
    """
    initializers = {t.name for t in model.graph.initializer}
    region = set(seeds)
    producer: dict[str, str] = {}
    for node in model.graph.node:
        for out in node.output:
            producer[out] = node.name
    # Graph order is topological, so one pass sees each node's producers first.
    for node in model.graph.node:
        if node.op_type not in FOLLOWER_OPS:
            continue
        computed = [i for i in node.input if i and i not in initializers and i in producer]
        if computed and all(producer[i] in region for i in computed):
            region.add(node.name)
    return [n.name for n in model.graph.node if n.name in region]


def has_convolutions(model: Any) -> bool:
    """True when the ONNX graph has a Conv or ConvTranspose node; a graph without is quantized
    as a transformer (ORT's dynamic int8, NNCF's transformer mode)."""
    return any(node.op_type in ("Conv", "ConvTranspose") for node in model.graph.node)


def weight_node_count(model: Any) -> int:
    """How many weight nodes (Conv, Gemm, MatMul) a graph has."""
    return sum(1 for n in model.graph.node if n.op_type in WEIGHT_OPS)


def graph_inputs(model: Any) -> tuple[list[str], list[list[int | None]]]:
    """The graph's input names and each input's static sizes (None where a size is dynamic):
    a text model exported at 64 tokens is fed batches padded to their own longest text, and
    `task.fit_to_shapes` fits them to these sizes. Initializers listed as inputs are left out.
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    shapes = [
        [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        for i in inputs
    ]
    return [i.name for i in inputs], shapes
