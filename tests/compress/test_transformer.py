"""Transformer structure on a tiny random BERT: whole attention heads and FFN units physically
removed, low-rank projections, int8 projections and int8 embedding tables."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from autocompress.compress.apply import apply, bake, deploy
from autocompress.compress.int8_embedding import Int8Embedding
from autocompress.compress.prune import attention_heads
from autocompress.compress.size import compressed_size_bytes, size_bytes
from autocompress.config import LayerConfig, Plan
from autocompress.space.discover import discover
from autocompress.space.spec import load_space
from tests.transformer_factories import tiny_bert, tokens

ATT = "encoder.encoder.layer.{}.attention.self.{}"
FFN = "encoder.encoder.layer.{}.intermediate.dense"


def test_discover_finds_head_groups_ffn_groups_and_tables() -> None:
    model, x = tiny_bert(), tokens()
    layers = {info.name: info for info in discover(model, x)}
    qkv = [ATT.format(0, p) for p in ("query", "key", "value")]
    assert {layers[n].group for n in qkv} == {qkv[0]}
    assert layers[FFN.format(0)].group == FFN.format(0)
    tables = [n for n, info in layers.items() if info.type == "Embedding"]
    assert "encoder.embeddings.word_embeddings" in tables
    assert set(attention_heads(model)) >= set(qkv)


def test_head_pruning_removes_whole_heads_and_updates_the_module() -> None:
    model, x = tiny_bert(), tokens()
    names = [ATT.format(0, p) for p in ("query", "key", "value")]
    # 0.6 of 4 heads: rounded to whole heads (2 of 16 channels), never to a multiple of 8.
    plan = Plan(layers={n: LayerConfig(keep_ratio=0.6) for n in names}, round_to=8)
    pruned = apply(model, plan, x)
    attention = pruned.encoder.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 2 and attention.all_head_size == 32
    assert attention.query.out_features == attention.value.out_features == 32
    assert pruned.encoder.encoder.layer[0].attention.output.dense.in_features == 32
    # Every kept 16-row block of the query is one whole head of the dense model.
    dense_heads = model.encoder.encoder.layer[0].attention.self.query.weight.reshape(4, 16, 64)
    for block in attention.query.weight.reshape(2, 16, 64):
        assert any(torch.equal(block, head) for head in dense_heads)
    with torch.no_grad():
        out = pruned(*x)
    assert out.shape == (2, 64) and torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_ffn_pruning_and_full_rank_factorization_keep_the_output() -> None:
    model, x = tiny_bert(), tokens()
    ffn = Plan(layers={FFN.format(1): LayerConfig(keep_ratio=0.5)}, round_to=8)
    pruned = apply(model, ffn, x)
    assert pruned.encoder.encoder.layer[1].intermediate.dense.out_features == 64
    assert pruned.encoder.encoder.layer[1].output.dense.in_features == 64
    full = Plan(layers={ATT.format(0, "value"): LayerConfig(rank_ratio=1.0)})
    with torch.no_grad():
        assert torch.allclose(apply(model, full, x)(*x), model(*x), atol=1e-6)
    low = Plan(layers={FFN.format(0): LayerConfig(rank_ratio=0.25)})
    factorized = apply(model, low, x).encoder.encoder.layer[0].intermediate.dense
    assert [m.out_features for m in factorized] == [16, 128]


def test_int8_projections_and_tables_deploy_close_to_the_fake_quantized_model() -> None:
    model, x = tiny_bert(), tokens()
    layers = discover(model, x)
    plan = Plan(layers={info.name: LayerConfig(weight_bits=8) for info in layers})
    candidate = apply(model, plan, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deployed = deploy(candidate, plan, x, [x])
    kinds = set(deployed.layers.values())
    assert kinds == {"int8 dynamic", "int8 table"}
    assert isinstance(deployed.graph_module.get_submodule("encoder.embeddings"), torch.nn.Module)
    with torch.no_grad():
        cos = torch.cosine_similarity(deployed(*x), candidate(*x), dim=-1)
    assert bool((cos > 0.999).all())
    # The counted size is what the int8 tables and weights take (the float model: 4x that).
    counted = compressed_size_bytes(bake(candidate), plan)
    assert size_bytes(model) / counted > 3.0


def test_int8_embedding_matches_fake_quantized_lookup() -> None:
    table = torch.nn.Embedding(50, 8)
    ids = torch.arange(50).reshape(5, 10)
    quantized = Int8Embedding.from_float(table)
    assert quantized.weight.dtype == torch.int8
    error = (quantized(ids) - table(ids)).abs().max()
    assert 0 < error <= table.weight.abs().max() / 127


def test_transformer_space_searches_heads_ffn_ranks_and_int8() -> None:
    model, x = tiny_bert(), tokens()
    knobs = load_space("transformer").knobs(discover(model, x))
    settings = {k.setting for k in knobs}
    assert settings == {"keep_ratio", "rank_ratio", "act_bits", "weight_bits"}
    # The tables' only knob is their storage bits, one decision for all three (tied).
    tables = [k for k in knobs if "encoder.embeddings.word_embeddings" in k.layers]
    assert [(k.setting, k.choices, len(k.layers)) for k in tables] == [("weight_bits", (8, 4), 3)]


def test_a_realized_graph_takes_texts_of_any_length_fitted_to_its_exported_one() -> None:
    """Validation batches are padded to their own longest text; the exported graph has the
    example's length: shorter batches are zero-padded (pad id, mask 0), longer ones cut."""
    from autocompress.compress.quantize_real import compile_float

    model = tiny_bert()
    realized = compile_float(model, tokens(batch=1, length=12))
    with torch.no_grad():
        short = tokens(batch=2, length=7)
        assert torch.allclose(realized(*short), model(*short), atol=1e-4)
        ids, mask = tokens(batch=3, length=16)
        assert torch.allclose(realized(ids, mask), model(ids[:, :12], mask[:, :12]), atol=1e-4)
