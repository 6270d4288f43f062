"""Find the compressible layers of a model and the groups of layers that must be pruned together."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autocompress.compress.coupling import PRUNABLE, coupling_groups, dependency_graph, features
from autocompress.compress.depth import droppable_blocks

# Embedding tables are listed too: a plan may quantize them (their only knob, see spec.py).
_TABLES = (nn.Embedding,)
# The layer types a search space's `match: {type: ...}` names, as the torch classes they are.
LAYER_TYPES = {cls.__name__: cls for cls in (*PRUNABLE, *_TABLES)}


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
        block: the block it belongs to (`compress.depth.droppable_blocks`: a block
            that can be dropped whole), or None.
    """

    name: str
    type: str
    in_features: int
    out_features: int
    params: int
    group: str | None
    block: str | None = None

    @property
    def prunable(self) -> bool:
        """True when structured pruning can remove some of its output channels."""
        return self.group is not None


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
        blocks = droppable_blocks(model, inputs)
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
                    block=next((b for b in blocks if name.startswith(b + ".")), None),
                )
            )
    return layers
