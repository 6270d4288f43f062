"""Which levels a dense layer can take: refused levels name their reason, the rest pass."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

from autocompress.compress.apply import plan_notes
from autocompress.compress.factorize import factorize
from autocompress.compress.fits import refusal
from autocompress.errors import PlanWarning
from tests.conftest import SameConv2d


def test_ranks_that_save_weights_are_accepted_and_others_refused() -> None:
    assert refusal(nn.Linear(256, 256), "rank_ratio", 0.25) is None
    assert refusal(nn.Conv2d(64, 64, 1), "rank_ratio", 0.25) is None
    # A 3x3 conv split by spatial SVD at half its rank keeps as many weights as it has.
    reason = refusal(nn.Conv2d(16, 16, 3, padding=1), "rank_ratio", 0.5)
    assert reason is not None and "not fewer than the layer's 2304" in reason
    depthwise = refusal(nn.Conv2d(8, 8, 3, groups=8), "rank_ratio", 0.25)
    assert depthwise is not None and "depthwise" in depthwise
    same_pad = refusal(SameConv2d(8, 16, 1), "rank_ratio", 0.25)
    assert same_pad is not None and "SameConv2d" in same_pad
    assert refusal(nn.Conv2d(16, 16, 3), "rank_ratio", 1.0) is None  # full rank: no change


def test_n_m_patterns_need_a_divisible_input_width() -> None:
    reason = refusal(nn.Conv2d(3, 16, 3), "sparsity_pattern", "2:4")
    assert reason == "pattern 2:4 needs the input dimension to be a multiple of 4, got 27"
    assert refusal(nn.Conv2d(4, 16, 3), "sparsity_pattern", "2:4") is None
    assert refusal(nn.Linear(10, 4), "sparsity_pattern", "2:4") is not None
    assert refusal(nn.Linear(10, 4), "sparsity_pattern", "unstructured") is None


def test_settings_without_a_per_layer_limit_are_accepted() -> None:
    for setting, value in [("keep_ratio", 0.25), ("weight_bits", 4), ("sparsity", 0.5)]:
        assert refusal(nn.Conv2d(3, 16, 3), setting, value) is None
    assert refusal(nn.LSTM(8, 16), "rank_ratio", 0.5) is None  # factorized once unrolled


def test_plan_notes_collects_what_a_plan_could_not_apply_and_passes_other_warnings() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, groups=8))
    with pytest.warns(UserWarning, match="unrelated"), plan_notes() as notes:
        done = factorize(model, {"0": 0.5, "1": 0.5})
        warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert done == []
    assert notes == [
        "not factorizing '0': grouped/depthwise convolutions (groups=8) are not supported",
        "not factorizing '1': grouped/depthwise convolutions (groups=8) are not supported",
    ]
    with pytest.warns(PlanWarning):  # outside the block they are warnings as before
        factorize(model, {"0": 0.5})
