"""A trial's size_bytes is the size of the model.pt2 its candidate exports to, for any plan."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from autocompress.compress.apply import apply, deploy
from autocompress.compress.program import artifact_size_bytes, deployable_program, save_program
from autocompress.export.artifact import load
from autocompress.latency.profile import random_plans
from autocompress.optimize.latency import batch_inputs
from autocompress.optimize.objectives import fixed_data_order
from autocompress.space.discover import discover
from autocompress.space.spec import load_space
from autocompress.zoo import load_model, load_task

# The joint spaces a CNN is searched in: default.yaml and cnn.yaml (bf16, more levels).
SPACES = ("default", "cnn")


def test_size_accounting_within_2pct_over_20_random_plans(tmp_path: Path) -> None:
    dense, task = load_model("digits-cnn"), load_task("digits-cnn")
    inputs = batch_inputs(task, 1)
    with fixed_data_order(task):
        calibration = task.calibration_batches()
    x = torch.cat([task.inputs()[0]] * 3)
    layers = discover(dense, task.inputs())
    # Drawn as a random sampler draws them; every fourth without 8-bit weights (eager plans).
    plans = [
        plan
        for space in SPACES
        for plan in random_plans(
            load_space(space).knobs(layers, model=dense), 10, seed=0, eager_plans=True
        )
    ]
    errors, kinds = [], set()
    for i, plan in enumerate(plans):
        # What a trial records (`evaluate_plan` calls this after fine-tuning) ...
        recorded = artifact_size_bytes(apply(dense, plan, inputs), plan, inputs)
        # ... and the file export writes for the same plan, built again.
        deployable = deploy(apply(dense, plan, inputs), plan, inputs, calibration, compile=False)
        assert isinstance(deployable, torch.nn.Module)
        path = tmp_path / f"{i}.pt2"
        save_program(deployable_program(deployable, inputs), path)
        size = path.stat().st_size
        errors.append(abs(recorded - size) / size)
        assert errors[-1] <= 0.02, f"plan {i}: recorded {recorded}, model.pt2 {size}: {plan}"
        if i % 3 == 0:  # and the artifact is the deployable model (int8 ones lifted)
            with torch.no_grad():
                torch.testing.assert_close(load(path, compile=False)(x), deployable(x))
        # bf16 computes in bf16 where the CPU has it, else it counts as size only.
        realized = getattr(deployable, "layers", {}).values()  # none: a plain float model
        kinds |= {k.split()[0] if k.startswith("bf16") else k for k in realized}
        kinds |= {"sparse" for c in plan.layers.values() if c.sparsity > 0}
        kinds |= {"low-rank" for c in plan.layers.values() if c.rank_ratio < 1}
    # The plans mixed every method and every realization of low bits.
    assert kinds >= {
        "int8 static", "int8 dynamic", "int8 weights, size only", "int4 weights, size only",
        "bf16", "sparse", "low-rank",
    }  # fmt: skip
    print(f"digits-cnn: worst {max(errors):.2%}, median {statistics.median(errors):.2%}")


class _Branchy(torch.nn.Module):
    """Its output depends on a value: `torch.export` cannot capture it, so no model.pt2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if float(x.sum()) > 0 else -self.fc(x)


def test_a_model_export_cannot_capture_counts_its_tensors_and_says_so() -> None:
    from types import SimpleNamespace

    from autocompress.compress.size import compressed_size_bytes
    from autocompress.config import Plan
    from autocompress.optimize.objectives import _artifact_size

    model, plan = _Branchy().eval(), Plan(layers={})
    ctx = SimpleNamespace(latency_inputs=(torch.randn(1, 8),))
    figures = _artifact_size(ctx, model, plan, None)  # type: ignore[arg-type]
    assert figures["size_bytes"] == compressed_size_bytes(model, plan)
    assert figures["size_source"] == "tensors"
    assert figures["size_note"].startswith("tensors only: model.pt2 could not be built")
