"""LSTM layers: the unrolled form equals nn.LSTM, hidden units are pruned with the layers that
read them, low-rank factorizes the gate matrices, int8 deploys as dynamic int8 kernels."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply, deploy
from autocompress.compress.lstm import UnrolledLSTM
from autocompress.config import LayerConfig, Plan
from autocompress.space.discover import discover
from autocompress.zoo.digits_lstm import DigitsLSTM


@pytest.fixture
def model() -> DigitsLSTM:
    torch.manual_seed(0)
    return DigitsLSTM(hidden=32).eval()


X = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_unrolled_lstm_equals_nn_lstm(batch_first: bool) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16, batch_first=batch_first).eval()
    x = X if batch_first else X.transpose(0, 1)
    with torch.no_grad():
        (out, (h, c)), (out2, (h2, c2)) = lstm(x), UnrolledLSTM.from_lstm(lstm)(x)
    for a, b in ((out, out2), (h, h2), (c, c2)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_unrolling_refuses_stacked_lstms() -> None:
    with pytest.raises(ValueError, match="num_layers=2"):
        UnrolledLSTM.from_lstm(nn.LSTM(8, 16, num_layers=2))


def test_hidden_units_are_pruned_with_the_classifier(model: DigitsLSTM) -> None:
    layers = {info.name: info for info in discover(model, (X,))}
    assert layers["lstm"].type == "LSTM" and layers["lstm"].group == "lstm"
    # Units 16-31 made silent (all their weights zero): they are the least important, and
    # removing them must leave the output exactly as it was.
    with torch.no_grad():
        for g in range(4):
            rows = slice(g * 32 + 16, g * 32 + 32)
            for p in (model.lstm.weight_ih_l0, model.lstm.weight_hh_l0):
                p[rows] = 0
            model.lstm.bias_ih_l0[rows] = 0
            model.lstm.bias_hh_l0[rows] = 0
        model.lstm.weight_hh_l0[:, 16:] = 0
        model.head.weight[:, 16:] = 0
    pruned = apply(model, Plan(layers={"lstm": LayerConfig(keep_ratio=0.5)}), X)
    assert pruned.lstm.hidden_size == 16 and pruned.head.in_features == 16
    assert pruned.lstm.weight_ih_l0.shape == (64, 8)
    assert pruned.lstm.weight_hh_l0.shape == (64, 16)
    with torch.no_grad():
        assert torch.allclose(pruned(X), model(X), atol=1e-6)


def test_low_rank_lstm_factorizes_the_recurrent_matrix(model: DigitsLSTM) -> None:
    plan = Plan(layers={"lstm": LayerConfig(rank_ratio=0.25)})
    low = apply(model, plan, X)
    assert isinstance(low.lstm, UnrolledLSTM)
    assert [m.out_features for m in low.lstm.recurrent] == [8, 128]
    assert low(X).shape == (3, 10)


def test_int8_lstm_deploys_as_dynamic_int8_close_to_fake_quant(model: DigitsLSTM) -> None:
    plan = Plan(layers={"lstm": LayerConfig(keep_ratio=0.75, weight_bits=8)})
    candidate = apply(model, plan, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deployed = deploy(candidate, plan, X[:1], [(X,)])
    assert deployed.layers == {
        "lstm.input_proj": "int8 dynamic",
        "lstm.recurrent": "int8 dynamic",
    }
    with torch.no_grad():
        assert torch.allclose(deployed(X[:1]), candidate(X[:1]), atol=2e-3)
