"""Shared fixtures: a tiny ResNet-style model whose coupling groups are known by heart."""

from __future__ import annotations

import pytest
import torch
from torch import nn


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
