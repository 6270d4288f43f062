"""Sentence-embedding models from Hugging Face folders, and the task that judges them: distill to
the original embeddings, measure cosine fidelity and a downstream probe. Offline only."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from autocompress.cache import write_atomic
from autocompress.evaluate.embedding import ProbeAccuracy, cosine_distillation_loss, cosine_fidelity
from autocompress.quiet import quiet_torchao_import
from autocompress.task import Task
from autocompress.zoo._train import train_loader

MAX_TOKENS = 128
TRAIN_BATCH = 16
EVAL_BATCH = 64
# Pretrained transformers lose what they know at the default 1e-3; fine-tunes here are tens of
# steps, so the rate is at the high end of the usual 1e-5..1e-4.
FINETUNE_LR = 1e-4
SEED = 0


class SentenceEmbedder(nn.Module):
    """A Hugging Face encoder with mean pooling over real tokens and L2 normalization, as
    sentence-transformers computes all-MiniLM-L6-v2's embeddings.

    Args:
        encoder: a transformers model whose output has `last_hidden_state` (e.g. `BertModel`).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of shape (B, hidden) for token ids and mask of shape (B, T)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def is_hf_folder(path: str | Path) -> bool:
    """True when `path` is a folder holding a Hugging Face model (its config.json)."""
    folder = Path(path)
    return folder.is_dir() and (folder / "config.json").is_file()


def load_encoder(folder: str | Path) -> nn.Module:
    """`transformers.AutoModel` from a local folder, in eval mode, never touching the network.

    A BERT-style pooler (unused by mean pooling) is dropped.

    Args:
        folder: the model folder (config.json and weights).

    Returns:
        The encoder.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its load report lists the dropped pooler as "unexpected"
    hf_logging.disable_progress_bar()
    with quiet_torchao_import():  # transformers imports torchao on its first model load
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model.eval()


def load_tokenizer(folder: str | Path) -> Any:
    """`transformers.AutoTokenizer` from a local folder (offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_tokens: int = MAX_TOKENS) -> Any:
    """Token ids and attention masks, padded to `max_tokens`, as int64 tensors (N, max_tokens)."""
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    return enc["input_ids"].long(), enc["attention_mask"].long()


class Texts(Dataset):
    """Tokenized texts with one target per text (a label, or a (teacher, label) pair)."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, targets: Sequence[Any]) -> None:
        self.ids, self.mask, self.targets = ids, mask, list(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        return self.ids[i], self.mask[i], self.targets[i]


def collate_texts(samples: list[tuple[torch.Tensor, torch.Tensor, Any]]) -> tuple[Any, Any]:
    """((ids, mask), target) with padding trimmed to the longest text of the batch."""
    ids = torch.stack([s[0] for s in samples])
    mask = torch.stack([s[1] for s in samples])
    length = max(1, int(mask.sum(1).max()))
    targets = [s[2] for s in samples]
    if isinstance(targets[0], tuple):
        target: Any = tuple(torch.stack([t[i] for t in targets]) for i in range(len(targets[0])))
    else:
        target = torch.stack(targets)
    return (ids[:, :length], mask[:, :length]), target


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled batches of texts of about the same length, so that trimming a batch's padding
    to its longest text leaves little padding.

    Each pass shuffles all texts, sorts each run of `group` batches' worth by length, cuts the
    runs into batches and shuffles the batches, so that consecutive batches are of any length
    (Hugging Face's `LengthGroupedSampler` keeps a run's batches in length order: a fine-tune of
    a few dozen steps would see its tweets longest first). On minilm-sentiment's training
    tweets (32.7 tokens on average), shuffled batches of 32 are padded to 56.5 tokens per
    tweet; grouped, to 33.2.

    Args:
        lengths: the number of real tokens of each text.
        batch_size: texts per batch.
        generator: draws every shuffle (a seeded generator repeats the same batches).
        group: batches sorted together.
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        *,
        batch_size: int,
        generator: torch.Generator,
        group: int = 50,
    ) -> None:
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator
        self.group = group

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches: list[list[int]] = []
        for run in order.split(self.group * self.batch_size):
            by_length = run[torch.argsort(self.lengths[run], stable=True)]
            batches += [b.tolist() for b in by_length.split(self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


def grouped_loader(texts: Texts, *, batch_size: int, seed: int = SEED) -> DataLoader:
    """A training loader of `texts` in `LengthGroupedBatches`, seeded like `train_loader`.

    The loader's `generator` is the one the batches are drawn with, so that reseeding it
    (`optimize.objectives.fixed_data_order`) repeats them.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = LengthGroupedBatches(texts.mask.sum(1), batch_size=batch_size, generator=generator)
    return DataLoader(texts, batch_sampler=batches, generator=generator, collate_fn=collate_texts)


def by_length(texts: Texts) -> Texts:
    """The same texts sorted by length (stable), for scoring: batches cut from them need
    little padding, and a per-text metric does not depend on the order."""
    order = torch.argsort(texts.mask.sum(1), stable=True)
    return Texts(texts.ids[order], texts.mask[order], [texts.targets[i] for i in order])


@torch.no_grad()
def embed(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The model's embeddings of tokenized texts, in batches, padding trimmed per batch."""
    model.eval()
    texts = Texts(ids, mask, torch.zeros(len(ids)))
    loader = DataLoader(texts, EVAL_BATCH, collate_fn=collate_texts)
    return torch.cat([model(*x).float() for x, _ in loader]) if len(ids) else torch.empty(0)


def embedding_task(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    name: str,
    val_size: int,
    probe_size: int,
    train_size: int | None = None,
    labelled: int | None = None,
    max_tokens: int = MAX_TOKENS,
    cache: Path | None = None,
) -> Task:
    """The distillation task of a sentence-embedding model on labelled texts.

    The labelled texts are shuffled with a fixed seed: the first `val_size` are the validation
    split, the next `probe_size` train the probe; every text outside the validation split is
    fine-tuning data (the fine-tune sees no labels). The metric is the cosine fidelity to
    `model`'s own embeddings; the probe's accuracy is an extra metric.

    Args:
        model: the dense embedding model (its embeddings are the targets).
        tokenizer: its tokenizer.
        texts: the texts.
        labels: one class per text (for the probe), as integers.
        labelled: only the first this many texts have real labels (validation and probe texts
            come from them; the others only fine-tune); None: all of them.
        name: the task's name.
        val_size: validation texts.
        probe_size: texts the probe is fitted on (the dense model's embeddings of them).
        train_size: at most this many fine-tuning texts; None for all of them.
        max_tokens: padding/truncation length; the example input has this many tokens.
        cache: a file to keep the dense model's embeddings in between runs (None: recompute).

    Returns:
        The task; batches are ``((input_ids, attention_mask), target)``.
    """
    rng = random.Random(SEED)
    order = list(range(len(texts) if labelled is None else labelled))
    rng.shuffle(order)
    val_idx = order[:val_size]
    probe_idx = order[val_size : val_size + probe_size]
    held_out = set(val_idx)
    train_idx = [i for i in rng.sample(range(len(texts)), len(texts)) if i not in held_out]
    train_idx = train_idx[:train_size]
    ids, mask = tokenize(tokenizer, texts, max_tokens=max_tokens)
    target = torch.tensor(list(labels), dtype=torch.long)
    teacher = _teacher_embeddings(model, ids, mask, val_idx + probe_idx, cache)
    val_emb, probe_emb = teacher[:val_size], teacher[val_size:]
    val = Texts(ids[val_idx], mask[val_idx], list(zip(val_emb, target[val_idx], strict=True)))
    train = Texts(ids[train_idx], mask[train_idx], target[train_idx])
    return Task(
        name=name,
        train=train_loader(train, batch_size=TRAIN_BATCH, collate_fn=collate_texts),
        val=DataLoader(val, batch_size=EVAL_BATCH, collate_fn=collate_texts),
        example_input=(ids[val_idx[:1]].clone(), mask[val_idx[:1]].clone()),
        metric=cosine_fidelity,
        metric_name="cosine",
        loss=cosine_distillation_loss,
        extra_metrics={"probe_top1": ProbeAccuracy(probe_emb, target[probe_idx])},
        finetune_lr=FINETUNE_LR,
    )


def _teacher_embeddings(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, rows: list[int], cache: Path | None
) -> torch.Tensor:
    """The dense model's embeddings of the chosen rows, from `cache` when it matches them."""
    import io

    key = torch.cat([ids[rows].flatten(), mask[rows].flatten()])
    if cache is not None and cache.exists():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            if torch.equal(stored["key"], key):
                return stored["embeddings"]
        except Exception:  # a damaged cache file: compute again
            pass
    embeddings = embed(model, ids[rows], mask[rows])
    if cache is not None:
        buffer = io.BytesIO()
        torch.save({"key": key, "embeddings": embeddings}, buffer)
        write_atomic(cache, buffer.getvalue())
    return embeddings
