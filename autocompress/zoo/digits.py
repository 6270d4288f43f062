"""Zoo models on scikit-learn's bundled 8x8 handwritten digits: data, architectures, training."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register
from autocompress.zoo._train import SEED, fit_classifier, train_loader

VAL_FRACTION = 0.3
VAL_BATCH = 256
NUM_CLASSES = 10
RESNET_BLOCKS = (3, 3, 3)

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


# --- data ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 bundled digits: images scaled to [0, 1], shape (N, 1, 8, 8), and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images.astype(np.float32) / 16.0)[:, None], digits.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The one train/validation split of the digits (stratified, 70/30, fixed seed).

    Returns:
        ``(train_indices, val_indices)`` into scikit-learn's ``load_digits()`` arrays.
    """
    from sklearn.model_selection import train_test_split

    _, y = _load_digits()
    train_idx, val_idx = train_test_split(
        np.arange(len(y)), test_size=VAL_FRACTION, random_state=SEED, stratify=y
    )
    return train_idx, val_idx


@functools.lru_cache(maxsize=1)
def _digits_8x8() -> Split:
    """The split digits, normalized by the mean and std of the training pixels.

    Returns:
        ``(x_train, y_train, x_val, y_val)``; images are float32 of shape (N, 1, 8, 8).
    """
    x, y = _load_digits()
    train_idx, val_idx = split_indices()
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
    x = (x - mean) / std
    return (
        torch.from_numpy(x[train_idx]),
        torch.from_numpy(y[train_idx]),
        torch.from_numpy(x[val_idx]),
        torch.from_numpy(y[val_idx]),
    )


@functools.lru_cache(maxsize=1)
def _digits_32x32() -> Split:
    """The same split as `_digits_8x8`, images upsampled bilinearly to (N, 1, 32, 32)."""
    x_tr, y_tr, x_va, y_va = _digits_8x8()

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)

    return up(x_tr), y_tr, up(x_va), y_va


def _make_task(name: str, split: Split) -> Task:
    x_tr, y_tr, x_va, y_va = split
    train = train_loader(TensorDataset(x_tr, y_tr))
    val = DataLoader(TensorDataset(x_va, y_va), batch_size=VAL_BATCH, shuffle=False)
    return Task(
        name=name,
        train=train,
        val=val,
        example_input=x_va[:1].clone(),
        metric=top1,
        metric_name="top1",
    )


def digits_task() -> Task:
    """The 8x8 digits task: 1257 training and 540 validation images, metric top-1.

    Returns:
        A task whose batches are ``(x, y)`` with x of shape (B, 1, 8, 8).
    """
    return _make_task("digits-8x8", _digits_8x8())


def digits32_task() -> Task:
    """The digits task at 32x32 (bilinear upsampling of the 8x8 images); same split.

    Returns:
        A task whose batches are ``(x, y)`` with x of shape (B, 1, 32, 32).
    """
    return _make_task("digits-32x32", _digits_32x32())


# --- architectures ------------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class DigitsCNN(nn.Sequential):
    """A small CNN with BatchNorm for 1x8x8 digits (14,458 parameters)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(
            *_conv_bn(1, 16),
            *_conv_bn(16, 32),
            nn.MaxPool2d(2),
            *_conv_bn(32, 32),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 conv+BN, with a 1x1 conv+BN shortcut when the shape changes.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first conv (2 halves the resolution).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class DigitsResNet(nn.Module):
    """A CIFAR-style ResNet (ResNet-20 family) for 1x32x32 inputs.

    Args:
        blocks: basic blocks in each of the three stages (16, 32, 64 channels).
        num_classes: outputs of the final Linear layer.
    """

    def __init__(
        self, blocks: tuple[int, int, int] = RESNET_BLOCKS, num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16))
        stages: list[nn.Module] = []
        c_in = 16
        for i, (c_out, n) in enumerate(zip((16, 32, 64), blocks, strict=True)):
            layers = [
                BasicBlock(c_in if j == 0 else c_out, c_out, 2 if i and not j else 1)
                for j in range(n)
            ]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes) for images of shape (B, 1, 32, 32)."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# --- training -----------------------------------------------------------------------------


def _random_shift(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by a random whole number of pixels in [-max_px, max_px], edges repeated."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_px, max_px, max_px, max_px), mode="replicate")
    dy, dx = torch.randint(0, 2 * max_px + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, 1, h, w + 2 * max_px)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, 1, h, w)
    return out.gather(3, cols)


def train_digits_cnn(model: nn.Module, task: Task) -> None:
    """Train `DigitsCNN` in place (fixed seed; ~3 s on 2 idle cores).

    Args:
        model: a freshly built `DigitsCNN`.
        task: `digits_task()`; only its training split is used.
    """
    fit_classifier(model, task, epochs=20, lr=1e-2, label="digits-cnn")


def train_digits_resnet(model: nn.Module, task: Task) -> None:
    """Train `DigitsResNet` in place with random 2-pixel shifts (fixed seed; ~35 s on 2 idle cores).

    Args:
        model: a freshly built `DigitsResNet`.
        task: `digits32_task()`; only its training split is used.
    """
    gen = torch.Generator().manual_seed(SEED)
    fit_classifier(
        model,
        task,
        epochs=10,
        lr=5e-3,
        augment=lambda x: _random_shift(x, 2, gen),
        label="digits-resnet",
    )


DIGITS_CNN = register(
    ZooEntry(
        name="digits-cnn",
        description="small CNN (14.5k params) on 8x8 handwritten digits; top-1 accuracy",
        build=DigitsCNN,
        task=digits_task,
        train=train_digits_cnn,
    )
)

DIGITS_RESNET = register(
    ZooEntry(
        name="digits-resnet",
        description="ResNet-20 (272k params) on the digits upsampled to 32x32; top-1 accuracy",
        build=DigitsResNet,
        task=digits32_task,
        train=train_digits_resnet,
        version=2,
    )
)
