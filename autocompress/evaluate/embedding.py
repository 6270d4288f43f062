"""Metrics and loss for sentence-embedding models: fidelity to the original embeddings and a
downstream probe fitted once on the original model's embeddings.

Validation batches are ``(inputs, (teacher_embeddings, labels))``: the original model's
embeddings are computed once when the task is built, so the metrics need no teacher model.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


def _run(model: nn.Module, x: Any) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple | list) else model(x)


# The last model's validation embeddings: fidelity and probe read the same embeddings, so a
# trial embeds the validation texts once. Keyed by the model object (a weak reference), the
# loader, and the version counters of its parameters (any training step changes them).
_last: dict[str, Any] = {}


def _state(model: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in model.parameters())


@torch.no_grad()
def _pairs(model: nn.Module, loader: DataLoader) -> list[tuple[torch.Tensor, Any]]:
    """(model embeddings, batch target) per validation batch, in eval mode (mode restored)."""
    ref = _last.get("model")
    same = ref is not None and ref() is model and _last["loader"] is loader
    if same and _last["state"] == _state(model):
        return _last["pairs"]
    was_training = model.training
    model.eval()
    try:
        pairs = [(_run(model, x).float(), target) for x, target in loader]
    finally:
        model.train(was_training)
    _last.update(model=weakref.ref(model), loader=loader, state=_state(model), pairs=pairs)
    return pairs


def cosine_fidelity(model: nn.Module, loader: DataLoader) -> float:
    """Mean cosine similarity between the model's embeddings and the original model's.

    Args:
        model: the (compressed) embedding model.
        loader: validation batches ``(inputs, (teacher_embeddings, labels))``.

    Returns:
        A number in [-1, 1]; 1.0 for the original model itself.

    Raises:
        ValueError: the loader yielded no samples.
    """
    total, count = 0.0, 0
    for emb, (teacher, _) in _pairs(model, loader):
        total += float(F.cosine_similarity(emb, teacher.float(), dim=-1).sum())
        count += emb.shape[0]
    if count == 0:
        raise ValueError("the validation loader yielded no samples")
    return total / count


def cosine_distillation_loss(
    student_out: torch.Tensor, teacher_out: torch.Tensor, batch: Any = None
) -> torch.Tensor:
    """1 - cosine similarity to the dense model's embeddings, averaged over the batch.

    Args:
        student_out: embeddings of the compressed model, (B, D).
        teacher_out: embeddings of the dense model, (B, D).
        batch: the training batch (unused; part of the Task loss signature).

    Returns:
        The scalar loss (0 when the embeddings point the same way).
    """
    return (1.0 - F.cosine_similarity(student_out, teacher_out.detach(), dim=-1)).mean()


class ProbeAccuracy:
    """Accuracy of a linear probe, fitted once on the original model's embeddings, when it reads
    another model's embeddings: can the compressed model replace the original under a
    downstream classifier that was trained for the original?

    Args:
        embeddings: the original model's embeddings of the probe's training texts, (N, D).
        labels: their class labels, (N,).
    """

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        self.classifier_ = LogisticRegression(C=10.0, max_iter=2000).fit(
            embeddings.float().numpy(), labels.numpy()
        )

    def __call__(self, model: nn.Module, loader: DataLoader) -> float:
        """Top-1 of the probe on the model's embeddings of the validation texts.

        Args:
            model: the (compressed) embedding model.
            loader: validation batches ``(inputs, (teacher_embeddings, labels))``.

        Returns:
            The accuracy as a fraction in [0, 1].

        Raises:
            ValueError: the loader yielded no samples.
        """
        correct, count = 0, 0
        for emb, (_, labels) in _pairs(model, loader):
            predicted = self.classifier_.predict(emb.numpy())
            correct += int(np.sum(predicted == labels.numpy()))
            count += emb.shape[0]
        if count == 0:
            raise ValueError("the validation loader yielded no samples")
        return correct / count
