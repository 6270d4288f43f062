"""The kernels a plan deploys, worked out from shapes alone: no model is built.

The latency predictor needs, for any plan, every Conv/Linear kernel the deployed model runs
(channel counts after pruning, the two halves of a factorized layer) and the number format it
computes in, and each self-attention core at the heads it keeps (`latency.attention`). An
LSTM is one kernel while it stays an `nn.LSTM`; unrolled (for a low rank or fewer bits,
`compress.lstm`) it is its input projection and one recurrent Linear per step.
`ModelShapes` learns once, from the dense model, each layer's geometry, its input size and
which coupling group's pruning shrinks its inputs; after that, `kernels(plan)` is arithmetic
(how a factorized layer splits is learned once per layer on the meta device), well under a
millisecond per plan once each layer's channel counts have been seen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from autocompress.compress.coupling import features
from autocompress.compress.factorize import smaller_rank
from autocompress.compress.method import kernel_effect
from autocompress.compress.prune import kept_channels
from autocompress.config import LayerConfig, Plan
from autocompress.errors import AutocompressError
from autocompress.latency.attention import AttentionShape, find_attention
from autocompress.latency.geometry import (
    FactorTemplate,
    factor_template,
    geometry_of,
    size_recorder,
)
from autocompress.latency.kernel import (
    BF16,
    FP32,
    INT8,
    KERNEL_TYPES,
    UNMODELLED_TYPES,
    Kernel,
    LayerShape,
    splittable,
)
from autocompress.space.discover import LayerInfo

log = logging.getLogger(__name__)


class ModelShapes:
    """A model's compressible layers as shapes, to list the kernels of any plan quickly.

    Args:
        layers: one LayerShape per compressible layer, in module order.
        group_channels: output channels of each coupling group in the dense model.
        bf16_compute: whether this CPU computes bf16 layers in bf16 (else they run fp32).
        group_multiples: channel multiple a group keeps (the head size of attention heads).
        runtime: the target's runtime ("pytorch", "onnxruntime", "openvino"): which layers
            run in int8 or bf16 once deployed.
        attention: the model's self-attention modules (their cores run in fp32).
    """

    def __init__(
        self,
        layers: Sequence[LayerShape],
        group_channels: dict[str, int],
        *,
        bf16_compute: bool,
        group_multiples: dict[str, int] | None = None,
        runtime: str = "pytorch",
        attention: Sequence[AttentionShape] = (),
    ) -> None:
        self.layers = list(layers)
        self.attention = list(attention)
        self._attention_json = [a.geometry_json() for a in self.attention]
        # A layer inside each attention module: the core leaves with it when its block is dropped.
        self._attention_layer = [
            next((x.name for x in self.layers if x.name.startswith(a.name + ".")), None)
            for a in self.attention
        ]
        self.runtime = runtime
        self.group_channels = dict(group_channels)
        self.group_multiples = dict(group_multiples or {})
        self.bf16_compute = bf16_compute
        self._geometry_json = [json.dumps(x.geometry, sort_keys=True) for x in self.layers]
        self._templates: dict[int | tuple[int, str], FactorTemplate | None] = {}
        self._parts = lru_cache(maxsize=65536)(self._layer_parts)
        # Per coupling group: the layers writing its tensor and those reading it.
        self._writers = {g: [x for x in self.layers if x.group == g] for g in group_channels}
        self._readers = {g: [x for x in self.layers if x.in_group == g] for g in group_channels}

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        layers: Sequence[LayerInfo],
        *,
        runtime: str = "pytorch",
    ) -> ModelShapes:
        """Learn the shapes from the dense model: one forward pass, then one trial pruning per
        coupling group to see whose inputs shrink with it.

        Args:
            model: the dense model (not modified).
            inputs: an example input batch.
            layers: `discover(model, inputs)`.
            runtime: the target's runtime.
        """
        from autocompress.compress.apply import apply
        from autocompress.compress.prune import attention_heads

        groups: dict[str, list[str]] = {}
        for info in layers:
            if info.group is not None:
                groups.setdefault(info.group, []).append(info.name)
        channels = {g: next(i.out_features for i in layers if i.group == g) for g in groups}
        left_out = [i for i in layers if i.type not in KERNEL_TYPES + UNMODELLED_TYPES]
        if left_out:
            raise AutocompressError(
                f"the latency model has no kernel for {len(left_out)} layer(s) the search "
                f"compresses ({', '.join(f'{i.name} ({i.type})' for i in left_out[:3])}); "
                "profiling without them would predict their plans wrong"
            )
        layers = [i for i in layers if i.type in KERNEL_TYPES]
        modules = dict(model.named_modules())
        in_sizes: dict[str, list[int]] = {}
        out_sizes: dict[str, int] = {}
        hooks = [
            modules[info.name].register_forward_hook(size_recorder(info.name, in_sizes, out_sizes))
            for info in layers
        ]
        try:
            with torch.no_grad():
                model.eval()(*inputs)
        finally:
            for hook in hooks:
                hook.remove()
        heads = attention_heads(model)
        multiples = {g: heads[m][1] for g, ms in groups.items() for m in ms if m in heads}
        in_group: dict[str, tuple[str, int]] = {}
        dense_in = {info.name: info.in_features for info in layers}
        for group, members in groups.items():
            kept = kept_channels(channels[group], 0.5, multiples.get(group))
            removed = channels[group] - kept
            if removed == 0:
                continue
            plan = Plan(layers={m: LayerConfig(keep_ratio=0.5) for m in members})
            try:
                pruned = dict(apply(model, plan, inputs).named_modules())
            except Exception as exc:  # a model whose forward fixes this width: such plans fail
                log.warning(
                    "cannot prune group %s of this model (%s): profiled as unpruned", group, exc
                )
                continue
            for name in dense_in:
                fan_in = features(pruned[name])[0]
                if fan_in != dense_in[name]:
                    in_group[name] = (group, (dense_in[name] - fan_in) // removed)
        shapes = [
            LayerShape(
                name=info.name,
                geometry=geometry_of(modules[info.name], in_sizes[info.name]),
                in_features=info.in_features,
                out_features=info.out_features,
                group=info.group,
                in_group=in_group.get(info.name, (None, 0))[0],
                in_per_channel=in_group.get(info.name, (None, 0))[1],
                out_size=out_sizes[info.name],
                splittable=splittable(modules[info.name]),
            )
            for info in layers
        ]
        attention = find_attention(heads, {x.name: x.group for x in shapes}, out_sizes)
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return cls(
            shapes, channels, bf16_compute=bf16, group_multiples=multiples, runtime=runtime,
            attention=attention,
        )  # fmt: skip

    def missing(self, layers: Sequence[LayerInfo]) -> list[str]:
        """Names of `layers` (from `discover`) a plan may compress but these shapes leave out
        (embedding tables excepted: their lookups are not kernels). A profile whose shapes
        miss a layer predicts every plan that changes it wrong; it must not be used.
        """
        known = {x.name for x in self.layers}
        return [i.name for i in layers if i.type not in UNMODELLED_TYPES and i.name not in known]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `ModelShapes.from_dict(s.to_dict())` rebuilds it."""
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "group_channels": self.group_channels,
            "bf16_compute": self.bf16_compute,
            "group_multiples": self.group_multiples,
            "runtime": self.runtime,
            "attention": [asdict(a) for a in self.attention],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelShapes:
        """Inverse of `to_dict`."""
        return cls(
            [LayerShape(**layer) for layer in data["layers"]],
            data["group_channels"],
            bf16_compute=data["bf16_compute"],
            group_multiples=data.get("group_multiples"),
            runtime=data.get("runtime", "pytorch"),
            attention=[AttentionShape(**a) for a in data.get("attention", [])],
        )

    def kernels(self, plan: Plan) -> list[Kernel]:
        """Every Conv/Linear kernel the plan's deployed model runs, in module order, then its
        attention cores (none for a dropped layer).

        Args:
            plan: the plan (its sparsity does not change kernels: sparse layers deploy dense).

        Returns:
            The kernels; a factorized layer gives two.
        """
        layers = [kernel for _, kernels in self._layer_kernels(plan) for kernel in kernels]
        cores = []
        for index, shape in enumerate(self.attention):
            inside = self._attention_layer[index]
            if inside is not None and kernel_effect(plan.config(inside)).removed:
                continue  # its layer was dropped
            keep = (
                1.0 if shape.group is None else kernel_effect(plan.config(shape.group)).keep_ratio
            )
            cores.append(self.attention_kernel(index, self.heads_kept(index, keep, plan.round_to)))
        return layers + cores

    def heads_kept(self, index: int, keep_ratio: float, round_to: int | None) -> int:
        """Heads attention module `index` keeps when its group keeps `keep_ratio` of them."""
        shape = self.attention[index]
        if shape.group is None:
            return shape.heads
        return self.kept(shape.group, keep_ratio, round_to) // shape.head_size

    def attention_kernel(self, index: int, heads: int) -> Kernel:
        """The fp32 core of attention module `index` at `heads` heads kept."""
        shape = self.attention[index]
        out_elems = heads * shape.head_size * shape.tokens
        return Kernel(self._attention_json[index], heads, shape.head_size, out_elems, FP32)

    def _layer_kernels(self, plan: Plan) -> list[tuple[LayerConfig, tuple[Kernel, ...]]]:
        """Each layer's config in the plan and the kernels it deploys as, in module order."""
        # A group is named after its first member, whose keep ratio is the group's.
        kept = {
            group: self.kept(group, kernel_effect(plan.config(group)).keep_ratio, plan.round_to)
            for group in self.group_channels
        }
        found = []
        for index, layer in enumerate(self.layers):
            cout = kept[layer.group] if layer.group else layer.out_features
            cin = layer.in_features
            if layer.in_group is not None:
                cin = self.fan_in(layer, kept[layer.in_group])
            cfg = plan.config(layer.name)
            if kernel_effect(cfg).removed:  # its block was dropped: no kernel runs
                found.append((cfg, ()))
                continue
            calls = self.layer_kernels(
                index, cin, cout, kernel_effect(cfg).rank_ratio, self.compute_of(layer, cfg),
                unrolled=self.unrolled(layer, cfg),
            )  # fmt: skip
            found.append((cfg, calls))
        return found

    def dynamic_elems(self, plan: Plan) -> int:
        """Input elements per sample of the int8 kernels that quantize their input at run time
        (dynamic int8: 8-bit weights, float activations). Each call first finds its input's
        range and quantizes it, a cost the static-int8 lookup tables leave out; leave-one-out
        on the compiled calibration plans, this feature raised within-10% on minilm from 0.78
        to 0.89 and Spearman on digits-resnet from 0.86 to 0.92.

        Args:
            plan: the plan.

        Returns:
            The sum over those kernels of input channels x output positions.
        """
        return sum(
            k.cin * (k.out_elems // k.cout)
            for cfg, kernels in self._layer_kernels(plan)
            if kernel_effect(cfg).bits[1] == 32
            for k in kernels
            if k.compute == INT8
        )

    @staticmethod
    def unrollable(layer: LayerShape) -> bool:
        """Whether a layer is an LSTM that `compress.lstm.unroll` can replace by Linears."""
        g = layer.geometry
        return (
            g["type"] == "LSTM" and g["layers"] == 1 and not g["bidirectional"] and layer.splittable
        )

    def unrolled(self, layer: LayerShape, cfg: LayerConfig) -> bool:
        """Whether the plan deploys an LSTM layer unrolled into Linears (as `compress.apply`
        does for a low rank or fewer bits: `Method.unrolls`) instead of as one `nn.LSTM` call."""
        return self.unrollable(layer) and kernel_effect(cfg).unrolls

    def keeps_recurrence(self, plan: Plan) -> bool:
        """Whether the plan deploys an LSTM layer whole, as one `nn.LSTM` call (one fused
        kernel whose time scales unlike the Linears of an unrolled one)."""
        return any(
            x.geometry["type"] == "LSTM" and not self.unrolled(x, plan.config(x.name))
            for x in self.layers
        )

    def quantized(self, plan: Plan) -> bool:
        """Whether the plan deploys with int8 layers (compiled by inductor in PyTorch), else
        as an eager (PyTorch) or float (runtime) model."""
        return any(self.compute_of(x, plan.config(x.name)) == INT8 for x in self.layers)

    def boundary_elems(self, plan: Plan) -> int:
        """Elements per sample of the tensors that pass between an int8 layer and a float one:
        a compiled plan converts each at the boundary (quantize or dequantize), a cost no
        kernel timed alone shows. Only coupling groups' tensors are seen (whose writers and
        readers are known); leave-one-out on digits-resnet's compiled calibration plans, this
        and the fp32 kernel count raised within-10% from 0.88 to 0.94.

        Args:
            plan: the plan.

        Returns:
            The sum over mixed groups of kept channels x the writers' output size.
        """
        total = 0
        for group, writers in self._writers.items():
            layers = writers + self._readers[group]
            formats = {self.compute_of(x, plan.config(x.name)) == INT8 for x in layers}
            if writers and len(formats) > 1:
                kept = self.kept(group, kernel_effect(plan.config(group)).keep_ratio, plan.round_to)
                total += kept * max(x.out_size for x in writers)
        return total

    def fan_in(self, layer: LayerShape, kept_in: int) -> int:
        """A layer's input channels when its `in_group` keeps `kept_in` channels."""
        assert layer.in_group is not None
        pruned = self.group_channels[layer.in_group] - kept_in
        return layer.in_features - layer.in_per_channel * pruned

    def kept(self, group: str, keep_ratio: float, round_to: int | None) -> int:
        """Channels a coupling group keeps at a keep ratio."""
        multiple = self.group_multiples.get(group, round_to)
        return kept_channels(self.group_channels[group], keep_ratio, multiple)

    def compute_of(self, layer: LayerShape, cfg: LayerConfig) -> str:
        """The format a layer computes in once deployed (mirrors `quantize_real.realize`, or
        `runtime_targets`: in a runtime only (8, 8) layers run in int8): INT8, BF16 or FP32,
        from the (weight, activation) bits the methods give its kernels (`KernelEffect`)."""
        kind = layer.geometry["type"]
        bits = kernel_effect(cfg).bits
        if kind == "LSTM":  # unrolled, its Linears deploy like any; whole, it stays fp32
            if not self.unrolled(layer, cfg):
                return FP32
            kind = "Linear"
        if self.runtime != "pytorch":
            return INT8 if bits == (8, 8) else FP32
        if bits == (8, 8) and kind != "Conv1d":
            return INT8
        if bits == (8, 32) and kind == "Linear":
            return INT8
        if bits[0] == 16 and self.bf16_compute:
            return BF16
        return FP32

    def layer_kernels(
        self,
        index: int,
        cin: int,
        cout: int,
        rank_ratio: float,
        compute: str,
        *,
        unrolled: bool = False,
    ) -> tuple[Kernel, ...]:
        """The kernels of layer `index` at these channel counts, rank and number format; an
        LSTM's as one fp32 call, or `unrolled` (see `unrolled`): its input projection over
        all steps, then the recurrent Linear once per step (`compress.lstm.UnrolledLSTM`)."""
        layer = self.layers[index]
        if layer.geometry["type"] != "LSTM":
            parts = self._parts(index, cin, cout, rank_ratio)
        elif not unrolled:
            parts = ((self._geometry_json[index], cin, cout, cout * layer.out_size),)
            compute = FP32
        else:
            # `compress.lstm.lstm_ranks`: both matrices at the LSTM's rank where that keeps
            # fewer weights, which `_parts` checks as `low_rank` does.
            steps = layer.out_size
            parts = self._parts((index, "input_proj"), cin, 4 * cout, rank_ratio)
            parts += steps * self._parts((index, "recurrent"), cout, 4 * cout, rank_ratio)
        return tuple(Kernel(geometry, a, b, elems, compute) for geometry, a, b, elems in parts)

    def _unrolled_part(self, index: int, part: str) -> LayerShape:
        """One Linear of LSTM layer `index` unrolled, at the dense hidden size."""
        layer = self.layers[index]
        hidden, steps = layer.out_features, layer.out_size
        if part == "input_proj":
            geometry = {"type": "Linear", "bias": layer.geometry["bias"], "in_size": [steps]}
            return replace(layer, name=f"{layer.name}.{part}", geometry=geometry,
                           out_features=4 * hidden)  # fmt: skip
        geometry = {"type": "Linear", "bias": False, "in_size": []}
        return replace(layer, name=f"{layer.name}.{part}", geometry=geometry,
                       in_features=hidden, out_features=4 * hidden, out_size=1)  # fmt: skip

    def _layer_parts(
        self, key: int | tuple[int, str], cin: int, cout: int, rank_ratio: float
    ) -> tuple[tuple[str, int, int, int], ...]:
        """(geometry, cin, cout, out_elems) of each kernel of a Conv/Linear layer, by index, or
        of one Linear of an unrolled LSTM, by (index, part) (cached per instance as `_parts`)."""
        if isinstance(key, int):
            layer, geometry = self.layers[key], self._geometry_json[key]
        else:
            layer = self._unrolled_part(*key)
            geometry = json.dumps(layer.geometry, sort_keys=True)
        own = ((geometry, cin, cout, cout * layer.out_size),)
        if rank_ratio >= 1.0 or not layer.splittable:
            return own
        if key not in self._templates:
            self._templates[key] = factor_template(
                layer.geometry, layer.in_features, layer.out_features
            )
        template = self._templates[key]
        if template is None:
            return own
        rows_per_out, cols_per_in, (first, first_size), (second, second_size) = template
        rank = smaller_rank(rows_per_out * cout, cols_per_in * cin, rank_ratio)
        if rank is None:  # low_rank leaves the layer whole at these channel counts
            return own
        return ((first, cin, rank, rank * first_size), (second, rank, cout, cout * second_size))
