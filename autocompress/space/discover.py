"""Find the compressible layers of a model and the groups of layers that must be pruned together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM)
# Embedding tables are listed too: a plan may quantize them (their only knob, see spec.py).
_TABLES = (nn.Embedding,)
# The layer types a search space's `match: {type: ...}` names, as the torch classes they are.
LAYER_TYPES = {cls.__name__: cls for cls in (*_PRUNABLE, *_TABLES)}


def layer_type(module: nn.Module) -> str | None:
    """The torch layer class `module` is, by name ("Conv2d", "Linear", "LSTM", "Embedding"),
    or None for any other module.

    A subclass counts as the torch class it derives from: models ported from TensorFlow
    subclass `nn.Conv2d` to pad in `forward` ("same" padding), and they are convolutions all
    the same.
    """
    return next((name for name, cls in LAYER_TYPES.items() if isinstance(module, cls)), None)


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer.

    Args:
        name: module name in `model.named_modules()`.
        type: the torch layer class it is ("Conv2d", "Linear"; see `layer_type`: a subclass
            of `nn.Conv2d` is a "Conv2d").
        in_features: input channels / features.
        out_features: output channels / features.
        params: number of weight and bias elements.
        group: name of its coupling group (layers whose output channels must be pruned together,
            e.g. the convolutions feeding one residual add), or None when its outputs cannot be
            pruned (the model's output layer).
    """

    name: str
    type: str
    in_features: int
    out_features: int
    params: int
    group: str | None

    @property
    def prunable(self) -> bool:
        """True when structured pruning can remove some of its output channels."""
        return self.group is not None


def features(module: nn.Module) -> tuple[int, int]:
    """(input, output) channels of a Conv, (in_features, out_features) of a Linear, (rows,
    width) of an Embedding, (input_size, hidden_size) of an LSTM."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    if isinstance(module, nn.LSTM):
        return module.input_size, module.hidden_size
    return module.in_channels, module.out_channels


def dependency_graph(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """torch-pruning's dependency graph of `model`, traced on `inputs` (with autograd on)."""
    import torch_pruning as tp

    from autocompress.compress.lstm import custom_pruners

    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=inputs, customized_pruners=custom_pruners()
        )


def output_layers(model: nn.Module, graph: Any) -> list[nn.Module]:
    """The prunable layers whose outputs are the model's outputs (their width is fixed).

    Found by tracing which layers' output tensors reach the model output without passing
    another prunable layer; shape-changing ops in between (flatten, pooling) don't matter.
    """
    outputs = []
    for module in model.modules():
        if isinstance(module, _PRUNABLE) and module in graph.module2node:
            node = graph.module2node[module]
            if _reaches_output(node, set()):
                outputs.append(module)
    return outputs


def _reaches_output(node: object, seen: set[int]) -> bool:
    """True when no prunable layer sits between `node` and the graph's output."""
    if id(node) in seen:
        return False
    seen.add(id(node))
    if not node.outputs:  # type: ignore[attr-defined]
        return True
    return any(
        not isinstance(out.module, _PRUNABLE) and _reaches_output(out, seen)
        for out in node.outputs  # type: ignore[attr-defined]
    )


def coupling_groups(model: nn.Module, graph: Any) -> list[tuple[str, list[str]]]:
    """The output-channel coupling groups of the prunable layers, from torch-pruning's DepGraph.

    Args:
        model: the model `graph` was traced on.
        graph: its `dependency_graph`.

    Returns:
        (group name, member layer names) pairs; a group is named after its first member in
        module order, so the names are stable for one architecture.
    """
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    groups = []
    for group in graph.get_all_groups(
        ignored_layers=output_layers(model, graph), root_module_types=list(_PRUNABLE)
    ):
        members = sorted(
            {
                names[dep.target.module]
                for dep, _ in group
                if isinstance(dep.target.module, _PRUNABLE)
                and graph.is_out_channel_pruning_fn(dep.handler)
            },
            key=order.__getitem__,
        )
        if members:
            groups.append((members[0], members))
    return sorted(groups, key=lambda g: order[g[0]])


def discover(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[LayerInfo]:
    """List the compressible layers of `model`, in module order.

    Args:
        model: the dense model (not modified).
        inputs: an example input batch, as positional arguments.

    Returns:
        One LayerInfo per Conv1d/Conv2d/Linear/LSTM layer, subclasses of them included
        (`group` names its coupling group;
        an LSTM's outputs are its hidden units) and
        per Embedding table (in = rows, out = width; never grouped).
    """
    was_training = model.training
    model.eval()
    try:
        graph = dependency_graph(model, inputs)
        group_of = {
            member: name for name, members in coupling_groups(model, graph) for member in members
        }
    finally:
        model.train(was_training)
    layers = []
    for name, module in model.named_modules():
        kind = layer_type(module)
        if kind is not None:
            fan_in, fan_out = features(module)
            layers.append(
                LayerInfo(
                    name=name,
                    type=kind,
                    in_features=fan_in,
                    out_features=fan_out,
                    params=sum(p.numel() for p in module.parameters(recurse=False)),
                    group=group_of.get(name),
                )
            )
    return layers
