"""Shared fixtures: a tiny ResNet-style model whose coupling groups are known by heart, quick
timing for tests that need a latency but not a precise one, and trained zoo weights to copy."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.hardware import runtime_targets, targets, timing


class _Block(nn.Module):
    """A basic residual block; a 1x1 strided downsample when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class TinyResNet(nn.Module):
    """stem conv+BN -> identity block -> stride-2 block -> avgpool -> Linear(10); 1x16x16 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.layer1 = _Block(16, 16, 1)
        self.layer2 = _Block(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# The coupling groups of TinyResNet, named after their first member in module order.
TINY_GROUPS = {
    "stem.0": ["stem.0", "layer1.conv2"],
    "layer1.conv1": ["layer1.conv1"],
    "layer2.conv1": ["layer2.conv1"],
    "layer2.conv2": ["layer2.conv2", "layer2.downsample.0"],
}


class LstmRows(nn.Module):
    """An LSTM over 5 steps of 6 features, its last hidden state into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 24, batch_first=True)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


class SameConv2d(nn.Conv2d):
    """A Conv2d that pads in `forward` as TensorFlow's "same" does (one-sided where the total
    is odd), as models ported from TensorFlow do (EfficientNet-Lite's convolutions)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        sizes = zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], strict=True)
        for size, k, s in sizes:
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class OwnLinear(nn.Linear):
    """A Linear subclass with its own `forward` (same computation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class SamePadNet(nn.Module):
    """Every Conv and Linear a subclass of the torch class: "same"-padded stem (stride 2),
    depthwise and pointwise convs, a 5x5 stride-2 conv (one-sided padding), two Linears;
    1x16x16 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(SameConv2d(1, 8, 3, 2), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(SameConv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Sequential(SameConv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.down = nn.Sequential(SameConv2d(16, 16, 5, 2), nn.BatchNorm2d(16), nn.ReLU6())
        self.hidden = OwnLinear(16, 32)
        self.fc = OwnLinear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.pw(self.dw(self.stem(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(torch.relu(self.hidden(x)))


# Its layers: every one a subclass.
SAME_PAD_LAYERS = ["stem.0", "dw.0", "pw.0", "down.0", "hidden", "fc"]


def make_same_pad_net(seed: int = 0) -> SamePadNet:
    """A SamePadNet with deterministic weights, in eval mode."""
    torch.manual_seed(seed)
    return SamePadNet().eval()


def make_tiny_resnet(seed: int = 0) -> TinyResNet:
    """A TinyResNet with deterministic weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyResNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    model.eval()
    return model


@pytest.fixture
def tiny_resnet() -> TinyResNet:
    """A fresh TinyResNet in eval mode."""
    return make_tiny_resnet()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    """One 1x1x16x16 example batch."""
    torch.manual_seed(1)
    return torch.randn(1, 1, 16, 16)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Train and evaluate on one thread: with two, any busy neighbour slows training up to 80x."""
    torch.set_num_threads(1)


def time_quickly(mp: pytest.MonkeyPatch) -> None:
    """Time every latency with 3 rounds of short blocks, a short warm-up and no re-timing.

    For tests that check that a latency was measured and where the figure goes, not how precise
    it is: the target's own protocol (15 rounds of 20 ms blocks, a contended block re-timed up
    to 3 times) is most of a tiny search's time, more so on a busy 2-core machine. The timing
    protocol itself is tested in tests/hardware/test_timing.py and test_targets.py.
    """
    real = timing.measure_latency

    def quick(*args, rounds=15, warmup_s=0.2, min_block_ms=20.0, max_retries=3, **kwargs):
        return real(
            *args, rounds=min(rounds, 3), warmup_s=min(warmup_s, 0.02),
            min_block_ms=min(min_block_ms, 5.0), max_retries=0, **kwargs,
        )  # fmt: skip

    for module in (targets, runtime_targets):
        mp.setattr(module, "measure_latency", quick)


@pytest.fixture
def quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`time_quickly` for one test."""
    time_quickly(monkeypatch)


@pytest.fixture(scope="session")
def digits_cnn_weights() -> Path:
    """digits-cnn's trained weights file in the zoo cache the suite uses, trained on first use.

    Tests that give each search a private cache copy it in (`copy_zoo_weights`) instead of
    training the same seeded model again; first-use training is tested in tests/zoo.
    """
    from autocompress.zoo import ZOO, load_model
    from autocompress.zoo._cache import weights_path

    load_model("digits-cnn")
    entry = ZOO.get("digits-cnn")
    return weights_path(entry.name, entry.version)


def copy_zoo_weights(weights: Path, cache: Path) -> None:
    """Put a zoo weights file into the zoo folder of the cache folder `cache`."""
    (cache / "zoo").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, cache / "zoo" / weights.name)
