"""A tiny randomly initialised BERT sentence embedder (transformers' own classes), for tests
that need the structure of a transformer but not its pretrained weights."""

from __future__ import annotations

import torch

from autocompress.zoo.text import SentenceEmbedder

VOCAB = 120


def tiny_bert(seed: int = 0) -> SentenceEmbedder:
    """2 layers, hidden 64, 4 heads of 16, FFN 128, vocabulary 120; eval mode."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return SentenceEmbedder(BertModel(config, add_pooling_layer=False)).eval()


def tokens(batch: int = 2, length: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and a mask whose second row is padded after 10 tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, 10:] = 0
        ids[1, 10:] = 0
    return ids, mask
