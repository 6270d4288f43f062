"""Low-rank factorization: exact at full rank, smaller below it, refusals warned, never a crash."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress.factorize import factorize, low_rank, rank_for


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


FULL_RANK_CASES = {
    "linear": (lambda: nn.Linear(24, 16), (5, 24)),
    "conv3x3-stride2-pad1-dil2": (lambda: nn.Conv2d(6, 10, 3, 2, 1, 2), (2, 6, 15, 13)),
    "conv3x5-mixed-geometry": (
        lambda: nn.Conv2d(6, 10, (3, 5), (2, 1), (1, 2), (1, 2)),
        (2, 6, 15, 13),
    ),
    "conv-same-even-kernel": (lambda: nn.Conv2d(6, 10, (4, 3), padding="same"), (2, 6, 9, 9)),
    "conv1x1-stride2": (lambda: nn.Conv2d(6, 10, 1, 2, bias=False), (2, 6, 9, 9)),
    "conv1d": (lambda: nn.Conv1d(6, 10, 3, 2, 1, 2), (2, 6, 21)),
}


# torch's own note about 'same' padding with an even kernel, not ours.
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("conv_svd", ["spatial", "channel"])
@pytest.mark.parametrize("case", FULL_RANK_CASES)
def test_full_rank_reproduces_the_layer(case: str, conv_svd: str) -> None:
    make, shape = FULL_RANK_CASES[case]
    layer = make()
    x = torch.randn(shape)
    pair = low_rank(layer, 1.0, conv_svd=conv_svd)
    assert isinstance(pair, nn.Sequential) and len(pair) == 2
    assert all(type(m) is type(layer) for m in pair)
    assert pair[0].bias is None and (pair[1].bias is None) == (layer.bias is None)
    with torch.no_grad():
        assert (pair(x) - layer(x)).abs().max().item() <= 1e-4


def test_conv_shapes_spatial_and_channel() -> None:
    conv = nn.Conv2d(8, 12, 3, 2, 1)
    spatial = low_rank(conv, 0.25, conv_svd="spatial")
    channel = low_rank(conv, 0.25, conv_svd="channel")
    assert spatial is not None and channel is not None
    # spatial: full rank min(8*3, 12*3) = 24 -> 6; (3x1) with the vertical stride, then (1x3)
    assert spatial[0].weight.shape == (6, 8, 3, 1) and spatial[0].stride == (2, 1)
    assert spatial[1].weight.shape == (12, 6, 1, 3) and spatial[1].stride == (1, 2)
    # channel: full rank min(8*9, 12) = 12 -> 3; the full kernel first, then 1x1
    assert channel[0].weight.shape == (3, 8, 3, 3) and channel[1].weight.shape == (12, 3, 1, 1)


def test_rank_for() -> None:
    assert rank_for(nn.Linear(100, 40), 0.25) == 10
    assert rank_for(nn.Linear(100, 40), 0.001) == 1
    assert rank_for(nn.Linear(100, 40), 1.0) == 40
    conv = nn.Conv2d(16, 32, 3)
    assert rank_for(conv, 0.5, conv_svd="spatial") == 24  # of min(16*3, 32*3) = 48
    assert rank_for(conv, 0.5, conv_svd="channel") == 16  # of min(16*9, 32) = 32
    assert rank_for(nn.Conv2d(16, 32, 1), 0.5) == 8
    assert rank_for(nn.Conv1d(4, 64, 5), 0.5) == 10  # of min(4*5, 64) = 20
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="rank_ratio"):
            rank_for(nn.Linear(4, 4), bad)


def test_quarter_rank_linear_is_smaller() -> None:
    layer = nn.Linear(64, 32)
    pair = low_rank(layer, 0.25)
    assert pair is not None
    r = 8  # 0.25 * min(64, 32)
    assert _params(pair) == 64 * r + r * 32 + 32 < _params(layer)
    assert pair(torch.randn(7, 64)).shape == (7, 32)


def test_error_falls_as_rank_grows() -> None:
    layer = nn.Linear(48, 48)
    x = torch.randn(64, 48)
    with torch.no_grad():
        errors = [(low_rank(layer, r)(x) - layer(x)).norm().item() for r in (0.1, 0.3, 0.45)]
        errors.append((low_rank(layer, 1.0)(x) - layer(x)).norm().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(8, 8, 3, groups=8),
        nn.Conv2d(8, 8, 3, groups=2),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
        nn.ConvTranspose2d(8, 8, 3),
        nn.Linear(8, 8),  # rank 0.9 keeps more weights than the layer
    ],
)
def test_unsupported_layers_give_none(layer: nn.Module) -> None:
    assert low_rank(layer, 0.9) is None


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def test_factorize_swaps_the_right_layers() -> None:
    model = _model()
    done = factorize(model, {"0": 0.25, "3": 0.25, "7": 0.25, "9": 1.0})
    assert done == ["0", "3", "7"]
    names = {n for n, _ in model.named_modules()}
    assert {"0.0", "0.1", "3.0", "3.1", "7.0", "7.1"} <= names
    assert isinstance(model[9], nn.Linear) and isinstance(model[2], nn.Conv2d)


def test_factorize_warns_and_skips_what_it_cannot_do() -> None:
    model = _model()
    depthwise = model[2]
    with pytest.warns(UserWarning, match=r"'2'.*depthwise"):
        assert factorize(model, {"2": 0.5}) == []
    assert model[2] is depthwise
    with pytest.warns(UserWarning, match="'nope'.*no such layer"):
        assert factorize(model, {"nope": 0.5, "7": 0.25}) == ["7"]
    with pytest.warns(UserWarning, match="'7'.*not a plain"):  # already factorized
        assert factorize(model, {"7": 0.25}) == []


def test_factorize_skips_tied_weights() -> None:
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    model[1].weight = model[0].weight
    with pytest.warns(UserWarning, match="'1'.*shared"):
        assert factorize(model, {"1": 0.25}) == []


def test_factorize_rejects_a_bad_ratio_before_changing_anything() -> None:
    model = _model()
    with pytest.raises(ValueError, match="'9'"):
        factorize(model, {"7": 0.25, "9": 0.0})
    assert isinstance(model[7], nn.Linear)


def test_factorized_model_trains() -> None:
    model = _model()
    factorize(model, {"0": 0.25, "3": 0.25, "7": 0.25})
    out = model(torch.randn(4, 3, 8, 8))
    assert out.shape == (4, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model[0][0].weight.grad.abs().sum() > 0
