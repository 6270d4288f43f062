"""Per-layer sensitivity: every single change of a space, measured on a training slice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autocompress.cli import main
from autocompress.evaluate.metrics import top1
from autocompress.evaluate.sensitivity import (
    Sensitivity,
    sensitivity_for,
    single_changes,
    training_slice,
)
from autocompress.space.discover import discover
from autocompress.space.spec import parse_space
from autocompress.space.uniform import IDENTITY
from autocompress.zoo import load_model, load_task
from tests.conftest import TinyResNet, copy_zoo_weights

SPACE = {
    "version": 1,
    "defaults": {
        "keep_ratio": [1.0, 0.75, 0.25],
        "prune_ramp": [0.0, 0.5],  # alone it changes nothing: not measured
        "weight_bits": [32, 8],
        "act_bits": [32, 8],
        "sparsity": [0.0, 0.5],
        "sparsity_pattern": ["unstructured", "2:4"],
    },
}


def test_single_changes_skip_the_identity_and_bring_their_partner(
    tiny_resnet: TinyResNet, tiny_input: torch.Tensor
) -> None:
    layers = discover(tiny_resnet, (tiny_input,))
    knobs = parse_space(SPACE).knobs(layers, model=tiny_resnet)
    changes = single_changes(knobs)
    # keep 0.75 and 0.25 per group, weight_bits 8, act_bits 8 and sparsity 0.5 per layer, and
    # 2:4 where a layer offers it (the stem's 9 inputs per output do not).
    per_knob = {"keep_ratio": 2, "prune_ramp": 0, "weight_bits": 1, "act_bits": 1, "sparsity": 1}
    per_knob["sparsity_pattern"] = 1
    assert any(k.setting == "prune_ramp" for k in knobs)
    assert len(changes) == sum(per_knob[k.setting] for k in knobs)
    for knob, value, params in changes:
        assert value != IDENTITY[knob.setting] and params[knob.param] == value
        others = {p: v for p, v in params.items() if p != knob.param}
        changed = {p for p, v in others.items() if v != IDENTITY[p.split(":")[0]]}
        if knob.setting == "act_bits":  # int8 activations come with int8 weights
            assert changed == {f"weight_bits:{knob.layers[0]}"} and params[next(iter(changed))] == 8
        elif knob.setting == "sparsity_pattern":  # 2:4 comes with its 50% sparsity
            assert changed == {f"sparsity:{knob.layers[0]}"}
        else:
            assert changed == set()


@pytest.fixture
def digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_cnn_weights: Path
) -> tuple[torch.nn.Module, object, list]:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    copy_zoo_weights(digits_cnn_weights, tmp_path / "cache")
    task = load_task("digits-cnn")
    dense = load_model("digits-cnn", task=task).eval()
    knobs = parse_space(SPACE).knobs(discover(dense, task.inputs()), model=dense)
    return dense, task, knobs


def test_sensitivity_of_digits_cnn_is_measured_on_training_batches_and_cached(digits) -> None:
    dense, task, knobs = digits
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    result, path = sensitivity_for(dense, task, knobs, model="digits-cnn", batches=4)

    # The slice is the same training batches every time, never the validation split.
    again = training_slice(task, 4)
    first = training_slice(task, 4)
    assert len(first) == 4
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    val = torch.cat([x for x, _ in task.val])
    assert not any(torch.equal(x, val[: len(x)]) for x, _ in first)
    assert result.dense == pytest.approx(top1(dense, again))
    assert result.batches == 4 and len(result.rows) == len(single_changes(knobs))
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())  # untouched

    # Cutting a group to a quarter of its channels costs more than to three quarters, and
    # int8 weights and activations cost next to nothing on this model.
    groups = {r["param"] for r in result.rows if r["setting"] == "keep_ratio"}
    deeper = [result.drop(g, 0.25) > result.drop(g, 0.75) for g in groups]
    assert sum(deeper) >= len(groups) - 1, result.rows
    assert max(result.drop(g, 0.25) for g in groups) > 0.05
    int8 = [r["drop"] for r in result.rows if r["setting"] == "act_bits"]
    assert int8 and max(abs(d) for d in int8) < 0.05

    # Cached: read back as measured; a damaged file is measured again.
    assert Sensitivity.from_json(path.read_text()) == result
    cached, same = sensitivity_for(dense, task, knobs, model="digits-cnn", batches=4)
    assert same == path and cached == result
    path.write_text("{not json")
    redone, _ = sensitivity_for(dense, task, knobs, model="digits-cnn", batches=4)
    assert redone.rows == result.rows


def test_cli_prints_the_costliest_changes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    digits_cnn_weights: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    copy_zoo_weights(digits_cnn_weights, tmp_path / "cache")
    argv = ["sensitivity", "--model", "digits-cnn", "--methods", "prune", "--batches", "2"]
    assert main([*argv, "--quiet", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "sensitivity of digits-cnn: top1" in out and "keep_ratio" in out
    assert f"sensitivity: {tmp_path / 'cache' / 'sensitivity' / 'digits-cnn'}" in out
    assert main([*argv, "--json"]) == 0
    assert Sensitivity.from_json(capsys.readouterr().out).batches == 2
    assert main(["sensitivity", "--model", "digits-cnn", "--batches", "0"]) == 2
    assert "--batches must be at least 1, got 0" in capsys.readouterr().err


def test_sparsity_sensitivity_of_a_tiny_mlp_matches_a_hand_computation() -> None:
    """Half of fc2's weights zeroed (the smallest magnitudes): the measured drop is the top-1
    lost on the slice and the distortion is |(W - W_masked) h|^2 / |W h + b|^2, computed here
    without the library's sparsity code."""
    from autocompress.evaluate.sensitivity import measure_sensitivity
    from tests.factories import tiny_mlp, tiny_task

    dense, task = tiny_mlp(), tiny_task()
    space = {"version": 1, "defaults": {"sparsity": [0.0, 0.5]}}
    knobs = parse_space(space).knobs(discover(dense, task.inputs()), model=dense)
    result = measure_sensitivity(dense, task, knobs, batches=2)
    data = training_slice(task, 2)
    w = dense.fc2.weight.detach()
    kept = w.abs().flatten().argsort(stable=True)[w.numel() // 2 :]
    masked = torch.zeros(w.numel()).index_fill_(0, kept, 1.0).view_as(w) * w
    with torch.no_grad():
        hidden = [torch.relu(dense.fc1(x)) for x, _ in data]
        outs = [dense.fc2(h) for h in hidden]
        changed = [h @ masked.T + dense.fc2.bias for h in hidden]
    error = sum(float(((c - o) ** 2).sum()) for c, o in zip(changed, outs, strict=True))
    energy = sum(float((o**2).sum()) for o in outs)
    labels = [y for _, y in data]
    hits = [
        sum(int((o.argmax(1) == y).sum()) for o, y in zip(group, labels, strict=True))
        for group in (outs, changed)
    ]
    total = sum(len(y) for y in labels)
    row = next(r for r in result.rows if r["layers"] == ["fc2"] and r["value"] == 0.5)
    assert row["distortion"] == pytest.approx(error / energy, rel=1e-4)
    assert row["drop"] == pytest.approx((hits[0] - hits[1]) / total)
    assert result.cost(row["param"], 0.5) == row["distortion"]  # what an allocation charges
