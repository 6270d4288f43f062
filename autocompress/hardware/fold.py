"""BatchNorm folded into the convolution before it, before a model is exported.

Both exports need it: an exported `torch.export` program dispatches every aten op from Python
(measured on a pruned digits-resnet, the loaded program took 1.32x the eager model's time
unfolded and 1.07x folded, and the file lost the BatchNorm tensors), and the ONNX exporter
folds BatchNorm itself but names the fused Conv after the BatchNorm, so a layer's nodes could
not be found by its module name.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class _ConvLeafTracer(torch.fx.Tracer):
    """Traces a model with every convolution as one call, subclasses included: a library's
    Conv2d that pads in its own forward (EfficientNet's "same" padding) stays one module."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.modules.conv._ConvNd) or super().is_leaf_module(
            m, module_qualified_name
        )


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of a float model (same classes) with each BatchNorm that only follows one
    convolution folded into that convolution's weights.

    The pairs are found in a `torch.fx` trace; a convolution or BatchNorm module called more
    than once is left alone, and so is a model that `torch.fx` cannot trace. Unlike
    `torch.fx.experimental.optimization.fuse`, a subclassed convolution is folded too: left to
    the exporter, its fused Conv was named after the BatchNorm, and `layer_nodes` could not
    find any layer of EfficientNet-Lite0.

    Args:
        module: a float model in eval mode (not modified).

    Returns:
        The folded copy.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(module).eval()
    try:
        graph = _ConvLeafTracer().trace(folded)
    except Exception:  # data-dependent control flow and the like: keep the unfolded model
        return folded
    modules = dict(folded.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.running_mean is None:
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        conv = modules.get(source.target)
        if (
            not isinstance(conv, nn.modules.conv._ConvNd)
            or conv.transposed
            or len(source.users) != 1
            or calls[source.target] != 1
            or calls[node.target] != 1
        ):
            continue
        folded.set_submodule(source.target, fuse_conv_bn_eval(conv, norm))
        folded.set_submodule(node.target, nn.Identity())
    return folded
