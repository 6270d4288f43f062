"""A search prints its progress, its notes and its front: no warning lines.

Run as a user runs it, in a fresh process (library import noise is printed once per process,
so an in-process test would miss it), on plans drawn from every method of the default space
in PyTorch eager (`--target cpu`; the runtime space has fewer methods):
ranks and 2:4 patterns some layers cannot take, int8 through torchao and ONNX Runtime.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_zoo_weights

REPO = Path(__file__).resolve().parents[1]
# The CLI in a fresh process with `time_quickly`: the eager int8 plans' full timing protocol
# was most of the test's 160 s, and what is checked here is what the search prints.
QUICKLY_TIMED_CLI = """
import sys
import pytest
from tests.conftest import time_quickly
from autocompress.cli import main
with pytest.MonkeyPatch.context() as mp:
    time_quickly(mp)
    code = main(sys.argv[1:])
sys.exit(code)
"""
# What library noise and skipped plan parts looked like before they were filtered or recorded.
NOISE = re.compile(r"warn|failed to load|^[WE]\d{4} |skipping torchvision", re.IGNORECASE)


def test_a_search_of_every_method_prints_no_warning(
    tmp_path: Path, digits_cnn_weights: Path
) -> None:
    # digits-cnn already trained (training's own output is tested in tests/zoo): the search's
    # alternatives, trials of every method and verify are what print here
    copy_zoo_weights(digits_cnn_weights, tmp_path / "cache")
    env = {**os.environ, "AUTOCOMPRESS_CACHE_DIR": str(tmp_path / "cache")}
    argv = [
        "search", "--model", "digits-cnn", "--target", "cpu", "--trials", "4",
        "--finetune-steps", "2", "--no-warm-start", "--latency", "measured", "--budget", "50ms",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", QUICKLY_TIMED_CLI, *argv],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Pareto front of study digits-cnn-cpu" in proc.stdout
    assert "note: plain alternative dense, ONNX Runtime int8" in proc.stderr
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if NOISE.search(line)]
    assert noise == []
    # What a plan could not apply (a 2:4 pattern on a width pruning made odd) is on its
    # trial, and `show` names it for front candidates: still no warning line.
    show = subprocess.run(
        [sys.executable, "-m", "autocompress", "show", "--study", "digits-cnn-cpu", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert not [line for line in show.stderr.splitlines() if NOISE.search(line)]


def test_onnx_export_drops_only_the_lines_it_names(caplog) -> None:
    """minilm-sentiment's export logged ~40 "Evaluation failed" lines from onnxscript's
    constant folding (an attention-mask reshape it leaves as it was); other lines still pass."""
    import logging

    from autocompress.quiet import quiet_onnx_export

    folding = logging.getLogger("onnxscript.optimizer._constant_folding")
    with caplog.at_level(logging.WARNING):
        with quiet_onnx_export():
            folding.warning("Evaluation failed: cannot reshape array of size 1 into shape (1,64)")
            folding.warning("a line about the user's model")
        folding.warning("Evaluation failed: outside the export")
    assert [r.getMessage() for r in caplog.records] == [
        "a line about the user's model",
        "Evaluation failed: outside the export",
    ]
