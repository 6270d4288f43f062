"""Per-layer bit-widths: fake quantization for fine-tuning, and the bytes quantized weights take.

A plan gives each Conv/Linear layer a pair ``(weight_bits, act_bits)``; the valid pairs are in
`VALID_BITS`. Fake quantization reproduces what the real kernels of `quantize_real.realize` compute
(int8: symmetric per-output-channel weights in [-127, 127], unsigned affine per-tensor activations
in [0, 255], scales clamped at 2**-12 like torchao's x86 observers), so a model fine-tuned with it
meets no surprise when realized. The real, deployable model and its measured speed-ups live in
`autocompress.compress.quantize_real`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress.compress._swap import QUANTIZABLE, leaves, swap_module
from autocompress.errors import PlanWarning

#: (weight_bits, act_bits) pairs a plan may give a layer; 16 means bfloat16.
VALID_BITS = frozenset({(32, 32), (16, 32), (8, 8), (8, 32), (4, 32)})
#: The smallest scale torchao's x86 int8 observers allow; mirrored so fake and real int8 agree.
INT8_EPS = 2.0**-12
_ACT_QMAX = 255


def check_bits(bits: tuple[int, int]) -> str | None:
    """Why a (weight_bits, act_bits) pair is not supported, or None when it is.

    Args:
        bits: the pair a plan gives a layer.

    Returns:
        A sentence for a warning, or None for a valid pair.
    """
    try:
        if tuple(bits) in VALID_BITS:
            return None
    except TypeError:
        return f"bits {bits!r} are not a (weight_bits, act_bits) pair"
    valid = ", ".join(str(b) for b in sorted(VALID_BITS))
    return f"bits {tuple(bits)} are not supported (valid (weight_bits, act_bits): {valid})"


def quantized_weight_bytes(weight: Tensor, weight_bits: int) -> int:
    """Storage bytes of a weight at a bit-width, as the deployed artifact holds it.

    int8 and int4 are symmetric per output channel (dimension 0): the integers plus one fp32
    scale per output channel. The int8 graph (torchao PT2E) also stores an int64 zero point per
    output channel, all zeros; int4 has none and packs two values per byte (rounded up). fp32
    and bf16 store only the values.

    Args:
        weight: the float weight; its first dimension is the output channels.
        weight_bits: 32, 16 (bfloat16), 8 or 4.

    Returns:
        The size in bytes.

    Raises:
        ValueError: an unsupported bit-width.
    """
    numel = weight.numel()
    if weight_bits in (32, 16):
        return numel * weight_bits // 8
    if weight_bits in (8, 4):
        channels = weight.shape[0] if weight.dim() else 1
        per_channel = 4 + (8 if weight_bits == 8 else 0)
        return math.ceil(numel * weight_bits / 8) + per_channel * channels
    raise ValueError(f"weight_bits must be one of 32, 16, 8, 4; got {weight_bits}")


def quantize_weight(weight: Tensor, weight_bits: int) -> Tensor:
    """The weight as its quantized form represents it, in float, with a straight-through gradient.

    Args:
        weight: the float weight (output channels first).
        weight_bits: 32 (returned as is), 16 (rounded through bfloat16), 8 or 4 (symmetric per
            output channel, integers in [-127, 127] or [-7, 7]).

    Returns:
        A float tensor of the weight's shape; its gradient passes to `weight` unchanged.
    """
    if weight_bits == 32:
        return weight
    if weight_bits == 16:
        return weight + (weight.to(torch.bfloat16).to(weight.dtype) - weight).detach()
    qmax = 2 ** (weight_bits - 1) - 1
    eps = INT8_EPS if weight_bits == 8 else torch.finfo(torch.float32).eps
    amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    scale = (amax / qmax).clamp(min=eps).float()
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -qmax, qmax)


def activation_qparams(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """Scale and zero point of unsigned 8-bit affine quantization over the range [low, high].

    The range is widened to contain zero, exactly as torch's min/max observers do.

    Args:
        low: the smallest activation seen (0-dim tensor).
        high: the largest activation seen (0-dim tensor).

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors of shape (1,).
    """
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = ((high - low) / _ACT_QMAX).clamp(min=INT8_EPS).float().reshape(1)
    zero_point = (-torch.round(low / scale)).clamp(0, _ACT_QMAX).to(torch.int32).reshape(1)
    return scale, zero_point


class FakeQuantLayer(nn.Module):
    """A Conv/Linear/Embedding layer computed with fake-quantized weights and, optionally, inputs.

    An embedding's rows are its output channels: int8 embeddings have one scale per token.

    Weights are quantized per output channel on every call (they change while fine-tuning).
    With ``act_bits == 8`` the input is quantized per tensor to [0, 255] over a running range:
    updated by an exponential moving average in training mode, frozen in eval mode (the first
    batch ever seen sets it, in either mode). Gradients pass straight through the rounding.

    Args:
        inner: the Conv1d/Conv2d/Linear layer; kept as the child `.inner`, its weights are the
            ones trained.
        weight_bits: 32, 16, 8 or 4.
        act_bits: 32 or 8.
        momentum: weight of the newest batch in the running range. Fine-tunes here are short
            (tens to hundreds of steps), so it is larger than torch's 0.01.
    """

    def __init__(
        self, inner: nn.Module, weight_bits: int, act_bits: int, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.inner = inner
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.momentum = momentum
        self.register_buffer("act_min", torch.tensor(math.inf))
        self.register_buffer("act_max", torch.tensor(-math.inf))

    def extra_repr(self) -> str:
        """The bit-widths, shown by ``print(model)``."""
        return f"weight_bits={self.weight_bits}, act_bits={self.act_bits}"

    def forward(self, x: Tensor) -> Tensor:
        """The layer's output on fake-quantized input and weights."""
        if self.act_bits == 8:
            x = self._quantize_input(x)
        masked = parametrize.is_parametrized(self.inner, "weight")  # sparsity's mask
        own = type(self.inner).__bases__[0] if masked else type(self.inner)
        if own not in (nn.Embedding, nn.Linear, nn.Conv1d, nn.Conv2d):
            # A subclass's own forward (a Conv2d that pads "same" in forward), on the
            # fake-quantized weight: the plain op would drop its padding. A mask keeps the
            # largest weights, so masking the quantized weight equals quantizing the masked.
            if masked:
                original = self.inner.parametrizations.weight.original
                name, value = "parametrizations.weight.original", original
            else:
                name, value = "weight", self.inner.weight
            quantized = quantize_weight(value, self.weight_bits)
            return torch.func.functional_call(self.inner, {name: quantized}, (x,))
        weight = quantize_weight(self.inner.weight, self.weight_bits)
        if isinstance(self.inner, nn.Embedding):
            e = self.inner
            return F.embedding(x, weight, e.padding_idx, e.max_norm, e.norm_type)
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, weight, self.inner.bias)
        return self.inner._conv_forward(x, weight, self.inner.bias)

    def _quantize_input(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            low, high = x.detach().min().float(), x.detach().max().float()
            if not torch.isfinite(self.act_min):
                self.act_min.copy_(low)
                self.act_max.copy_(high)
            elif self.training:
                self.act_min.lerp_(low, self.momentum)
                self.act_max.lerp_(high, self.momentum)
            scale, zero_point = activation_qparams(self.act_min, self.act_max)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, _ACT_QMAX)


def fake_quantize(model: nn.Module, bits: Mapping[str, tuple[int, int]]) -> list[str]:
    """Swap each planned Conv/Linear layer for a `FakeQuantLayer`, in place, for fine-tuning.

    A planned name may be a container (a factorized layer): every Conv/Linear inside gets the
    layer's bits. Layers at (32, 32) are left as they are. A layer that cannot be handled (unknown
    name, unsupported bits, no Conv/Linear inside, already fake-quantized) is left unchanged and
    named in a warning.

    Args:
        model: the model to modify in place.
        bits: ``{layer_name: (weight_bits, act_bits)}`` as in `VALID_BITS`.

    Returns:
        The planned names that were handled (including (32, 32) ones), in the mapping's order.
    """
    handled: dict[str, None] = {}
    for planned, leaf_name, leaf, (weight_bits, act_bits) in planned_leaves(
        model, bits, "fake-quantized"
    ):
        if (weight_bits, act_bits) != (32, 32):
            swap_module(model, leaf_name, FakeQuantLayer(leaf, weight_bits, act_bits))
        handled[planned] = None
    return list(handled)


def planned_leaves(
    model: nn.Module, bits: Mapping[str, tuple[int, int]], action: str
) -> list[tuple[str, str, nn.Module, tuple[int, int]]]:
    """Every Conv/Linear leaf a bit-width plan covers; a layer it cannot cover gets a warning.

    Args:
        model: the model the plan is for.
        bits: ``{layer_name: (weight_bits, act_bits)}``; a name may be a container.
        action: what is done to the layers, for the warning ("fake-quantized").

    Returns:
        ``(planned_name, leaf_name, leaf, (weight_bits, act_bits))`` for each leaf, in plan order.
    """
    found: list[tuple[str, str, nn.Module, tuple[int, int]]] = []
    for name, pair in bits.items():
        problem = check_bits(pair) or _leaf_problem(model, name)
        if problem is not None:
            warnings.warn(f"layer {name!r} not {action}: {problem}", PlanWarning, stacklevel=3)
            continue
        pair = (int(pair[0]), int(pair[1]))
        for leaf_name, leaf in leaves(model, name, QUANTIZABLE):
            if isinstance(leaf, nn.Embedding) and pair[1] != 32:
                warnings.warn(
                    f"layer {name!r} not {action}: an embedding's input is token ids, so "
                    "act_bits must be 32",
                    PlanWarning,
                    stacklevel=3,
                )
                continue
            found.append((name, leaf_name, leaf, pair))
    return found


def strip_fake_quant(model: nn.Module) -> None:
    """Put the plain layers back in place of every `FakeQuantLayer`, keeping their trained weights.

    Args:
        model: a model `fake_quantize` modified; modified in place.
    """
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantLayer)]
    for name, wrapper in wrapped:
        swap_module(model, name, wrapper.inner)


def _leaf_problem(model: nn.Module, name: str) -> str | None:
    """Why a plan cannot cover the layer `name`, or None."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return "the model has no such layer"
    if any(isinstance(m, FakeQuantLayer) for m in module.modules()):
        return "it is already fake-quantized"
    if not any(True for _ in leaves(model, name, QUANTIZABLE)):
        kinds = ", ".join(t.__name__ for t in QUANTIZABLE)
        return f"it is a {type(module).__name__} with no {kinds} inside"
    return None
