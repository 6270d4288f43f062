"""What is coupled: torch-pruning's dependency graph of a model, and the groups of layers whose
output channels must be pruned together (the convolutions feeding one residual add)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# The layer types whose output channels structured pruning can remove.
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM)


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
        if isinstance(module, PRUNABLE) and module in graph.module2node:
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
        not isinstance(out.module, PRUNABLE) and _reaches_output(out, seen)
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
        ignored_layers=output_layers(model, graph), root_module_types=list(PRUNABLE)
    ):
        members = sorted(
            {
                names[dep.target.module]
                for dep, _ in group
                if isinstance(dep.target.module, PRUNABLE)
                and graph.is_out_channel_pruning_fn(dep.handler)
            },
            key=order.__getitem__,
        )
        if members:
            groups.append((members[0], members))
    return sorted(groups, key=lambda g: order[g[0]])


def out_channel_fn(module: nn.Module, graph: Any) -> Any:
    """torch-pruning's function that removes `module`'s output channels."""
    import torch_pruning as tp

    if isinstance(module, nn.LSTM):  # the graph's own (customized) LSTM pruner
        return graph.get_pruner_of_module(module).prune_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    assert isinstance(module, PRUNABLE)
    return tp.prune_conv_out_channels


def group_importance(graph: Any, leader: nn.Module, channels: int) -> torch.Tensor:
    """Each of `leader`'s output channels' importance: the L2 magnitude over its whole
    coupling group (torch-pruning's `GroupMagnitudeImportance`)."""
    import torch_pruning as tp

    group = graph.get_pruning_group(
        leader, out_channel_fn(leader, graph), idxs=list(range(channels))
    )
    return tp.importance.GroupMagnitudeImportance(p=2)(group)
