"""LSTM layers: hidden-unit pruning through torch-pruning, and the unrolled form that low-rank
and int8 work on.

- Pruning: torch-pruning's own `LSTMPruner` (1.6.1) selects the wrong rows of the gate
  matrices and fails; `LSTMHiddenPruner` replaces it in the dependency graph (its documented
  `customized_pruners` hook), so the coupled layers after the LSTM shrink with it.
- `UnrolledLSTM` computes a one-layer LSTM step by step with ordinary `nn.Linear` layers (the
  input projection for the whole sequence at once, the recurrent one per step). Every other
  transform then sees plain Linears: low-rank factorizes them (`low_rank_lstm`), fake
  quantization trains them at int8, and the deployable build runs them as dynamic int8 kernels
  in one compiled graph (the loop unrolls when exported), like any Linear.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn


class LSTMHiddenPruner(tp.pruner.function.LSTMPruner):
    """Removes hidden units of a one-layer LSTM: their rows in all four gates of the input and
    recurrent matrices and biases, and their columns of the recurrent matrix."""

    def prune_out_channels(self, layer: nn.LSTM, idxs: list) -> nn.Module:
        """Remove hidden units `idxs` of `layer` in place."""
        if layer.num_layers != 1:
            raise ValueError("only one-layer LSTMs can be pruned (stack single-layer LSTMs)")
        hidden = layer.hidden_size
        keep = torch.tensor(sorted(set(range(hidden)) - {int(i) for i in idxs}))
        gate_rows = torch.cat([keep + g * hidden for g in range(4)])
        for suffix in ("", "_reverse") if layer.bidirectional else ("",):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{kind}_l0{suffix}"
                if getattr(layer, name, None) is None:
                    continue
                param = self._prune_parameter_and_grad(getattr(layer, name), gate_rows, 0)
                if kind == "weight_hh":
                    param = self._prune_parameter_and_grad(param, keep, 1)
                setattr(layer, name, param)
        layer.hidden_size = len(keep)
        layer._flat_weights_names = list(layer._flat_weights_names)
        layer._init_flat_weights()
        return layer

    def prune_in_channels(self, layer: nn.LSTM, idxs: list) -> nn.Module:
        """Remove input features `idxs` of `layer` in place."""
        super().prune_in_channels(layer, idxs)
        layer._init_flat_weights()
        return layer


def custom_pruners() -> dict[type, tp.pruner.function.BasePruningFunc]:
    """The pruners autocompress registers in every dependency graph it builds."""
    return {nn.LSTM: LSTMHiddenPruner()}


def unsupported_lstm(module: nn.LSTM) -> str | None:
    """Why `UnrolledLSTM.from_lstm(module)` cannot represent `module`, or None."""
    if module.num_layers != 1:
        return f"num_layers={module.num_layers} (only one-layer LSTMs)"
    if module.bidirectional:
        return "bidirectional LSTMs are not supported"
    if module.proj_size:
        return "LSTMs with proj_size are not supported"
    return None


class UnrolledLSTM(nn.Module):
    """A one-layer LSTM computed step by step with `nn.Linear` layers; same inputs, outputs and
    gate order (input, forget, cell, output) as `nn.LSTM`.

    Args:
        input_proj: maps inputs to the 4 * hidden gate pre-activations (carries both biases).
        recurrent: maps the hidden state to the 4 * hidden gate pre-activations (no bias).
        hidden_size: hidden units.
        batch_first: inputs and outputs are (batch, time, features).
    """

    def __init__(
        self, input_proj: nn.Module, recurrent: nn.Module, hidden_size: int, batch_first: bool
    ) -> None:
        super().__init__()
        self.input_proj = input_proj
        self.recurrent = recurrent
        self.hidden_size = hidden_size
        self.batch_first = batch_first

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> UnrolledLSTM:
        """The same computation as `lstm` (a one-layer, unidirectional LSTM without projection).

        Raises:
            ValueError: `lstm` is of a kind this cannot represent (see `unsupported_lstm`).
        """
        reason = unsupported_lstm(lstm)
        if reason is not None:
            raise ValueError(f"cannot unroll this LSTM: {reason}")
        hidden, size_in = lstm.hidden_size, lstm.input_size
        w_ih, w_hh = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach()
        input_proj = nn.Linear(size_in, 4 * hidden, bias=lstm.bias)
        recurrent = nn.Linear(hidden, 4 * hidden, bias=False)
        with torch.no_grad():
            input_proj.weight.copy_(w_ih)
            recurrent.weight.copy_(w_hh)
            if lstm.bias:
                input_proj.bias.copy_(lstm.bias_ih_l0.detach() + lstm.bias_hh_l0.detach())
        unrolled = cls(input_proj, recurrent, hidden, lstm.batch_first)
        return unrolled.to(w_ih.device, w_ih.dtype).train(lstm.training)

    def forward(
        self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """`(output, (h_n, c_n))` as `nn.LSTM` returns them, for a batched input."""
        if not self.batch_first:
            x = x.transpose(0, 1)
        batch, steps = x.shape[0], x.shape[1]
        if hx is None:
            h = x.new_zeros(batch, self.hidden_size)
            c = x.new_zeros(batch, self.hidden_size)
        else:
            h, c = hx[0][0], hx[1][0]
        gates_in = self.input_proj(x)
        outputs = []
        for t in range(steps):
            gates = gates_in[:, t] + self.recurrent(h)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs, dim=1)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, (h.unsqueeze(0), c.unsqueeze(0))


def unroll(model: nn.Module, names: list[str]) -> list[str]:
    """Replace the named `nn.LSTM` layers by their `UnrolledLSTM`, in place.

    Args:
        model: the model.
        names: layer names; names that are not `nn.LSTM` layers are ignored.

    Returns:
        The names replaced.
    """
    from autocompress.compress._swap import swap_module

    done = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if type(module) is nn.LSTM and unsupported_lstm(module) is None:
            swap_module(model, name, UnrolledLSTM.from_lstm(module))
            done.append(name)
    return done


def lstm_ranks(model: nn.Module, ranks: dict[str, float], unrolled: list[str]) -> dict[str, float]:
    """Rank ratios with each unrolled LSTM's name replaced by its two matrices' names.

    The recurrent matrix (4H x H) is factorized at the LSTM's ratio; the input projection
    (4H x input) too where that keeps fewer weights (not for narrow inputs).

    Args:
        model: the model after `unroll`.
        ranks: layer name -> rank ratio from the plan.
        unrolled: names `unroll` replaced.

    Returns:
        Layer name -> rank ratio, for `factorize`.
    """
    from autocompress.compress.factorize import unsupported_reason

    result = dict(ranks)
    for name in unrolled:
        ratio = result.pop(name, 1.0)
        if ratio >= 1.0:
            continue
        result[f"{name}.recurrent"] = ratio
        if unsupported_reason(model.get_submodule(f"{name}.input_proj"), ratio) is None:
            result[f"{name}.input_proj"] = ratio
    return result
