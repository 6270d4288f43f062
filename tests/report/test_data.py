"""The report's numbers without plotting: front, flags, budgets, hypervolume, heatmaps, timeline."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from autocompress.optimize.pareto import dominates, pareto_front
from autocompress.report.data import (
    export_command,
    hypervolume,
    hypervolume_gain,
    report_data,
    safe_dirname,
)
from tests.report.conftest import BASELINE, BUDGET, make_study


def _union_volume(points: list[tuple[float, float, float]]) -> float:
    """Inclusion-exclusion over boxes [0, p]: exact, exponential, fine for a handful of points."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = [min(p[i] for p in subset) for i in range(3)]
            total += (-1) ** (k + 1) * corner[0] * corner[1] * corner[2]
    return total


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_is_exact(seed: int) -> None:
    rng = random.Random(seed)
    points = [tuple(rng.choice([0.1, 0.25, 0.5, rng.random()]) for _ in range(3)) for _ in range(7)]
    assert hypervolume(points) == pytest.approx(_union_volume(points), abs=1e-12)


def test_hypervolume_edges() -> None:
    assert hypervolume([]) == 0.0
    assert hypervolume([(0.5, 0.5, 0.0)]) == 0.0  # no gain on one axis: no volume
    assert hypervolume([(0.5, 0.5, -1.0), (0.5, 0.5, 0.5)]) == pytest.approx(0.125)
    assert hypervolume([(1.0, 1.0, 1.0), (0.5, 0.5, 0.5)]) == pytest.approx(1.0)


def test_hypervolume_gains_make_the_dense_corner_box_one() -> None:
    def gain(accuracy: float, latency_ratio: float, size_ratio: float) -> tuple[float, ...]:
        return hypervolume_gain(
            accuracy, latency_ratio, size_ratio, dense_accuracy=0.95, floor=0.85
        )

    assert gain(0.95, 0.0, 0.0) == pytest.approx((1.0, 1.0, 1.0))
    assert hypervolume([gain(0.95, 0.0, 0.0)]) == pytest.approx(1.0)
    assert hypervolume([gain(0.95, 1.0, 1.0)]) == 0.0  # the dense model itself adds nothing
    assert hypervolume([gain(0.80, 0.2, 0.2)]) == 0.0  # below the floor adds nothing
    # Half the latency and size at the accuracy halfway to the floor: 0.5 * 0.5 * 0.5.
    assert hypervolume([gain(0.90, 0.5, 0.5)]) == pytest.approx(0.125)
    # Two candidates trading accuracy for speed: their union, not the sum.
    pair = [gain(0.95, 0.5, 0.5), gain(0.90, 0.25, 0.5)]
    assert hypervolume(pair) == pytest.approx(0.5 * 0.5 * 1.0 + 0.25 * 0.5 * 0.5)


def test_front_is_exactly_show_json(
    demo_study: optuna.Study, study_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = report_data(demo_study)
    assert data["front"] == pareto_front(demo_study)
    assert main(["show", "--study", "demo-cpu", "--storage", study_db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["trial"] for c in shown] == [c["trial"] for c in data["front"]]
    for a, b in zip(shown, data["front"], strict=True):
        for key in ("accuracy", "measured_ms", "size_bytes", "feasible", "plan"):
            assert a[key] == b[key]
    assert set(data["exports"]) == {str(c["trial"]) for c in data["front"]}


def test_data_is_plain_json(demo_study: optuna.Study) -> None:
    text = json.dumps(report_data(demo_study), allow_nan=False)
    assert json.loads(text)["meta"]["study"] == "demo-cpu"


def test_budget_lines(demo_study: optuna.Study) -> None:
    budget = report_data(demo_study)["budget"]
    assert budget["latency_ms"] == BUDGET["latency_ms"]
    assert budget["size_bytes"] == BUDGET["size_bytes"]
    assert budget["accuracy_floor"] == pytest.approx(BASELINE["accuracy"] - BUDGET["max_drop"])


def test_no_max_drop_no_floor(tmp_path: Path) -> None:
    study = make_study(
        f"sqlite:///{tmp_path / 's.db'}",
        complete=6,
        failed=0,
        budget={"latency_ms": 2.0, "size_bytes": None, "max_drop": None},
    )
    data = report_data(study)
    assert data["budget"]["accuracy_floor"] is None
    assert data["hypervolume"]["floor"] == 0.0
    assert "no --max-drop" in data["hypervolume"]["caption"]


def test_dominated_and_infeasible_flags(demo_study: optuna.Study) -> None:
    data = report_data(demo_study)
    rows = data["trials"]
    assert len(rows) == 30
    front = {c["trial"] for c in data["front"]}
    assert {r["trial"] for r in rows if r["category"] == "front"} == front
    assert {r["category"] for r in rows} == {"front", "dominated", "infeasible"}
    feasible = [r for r in rows if r["feasible"]]
    figures = {r["trial"]: (r["accuracy"], r["measured_ms"], r["size_bytes"]) for r in rows}
    for r in rows:
        assert r["feasible"] == (not r["violations"])
        me = figures[r["trial"]]
        beaten = any(dominates(figures[o["trial"]], me) for o in feasible)
        assert r["dominated"] == beaten
        if r["category"] == "front":
            assert r["feasible"] and not r["dominated"]
        elif r["category"] == "infeasible":
            assert not r["feasible"]
        else:  # feasible and off the front: dominated, or the same figures as a front trial
            assert r["dominated"] or me in {figures[t] for t in front}
    duplicate = next(r for r in rows if r["duplicate_of"] is not None)
    assert figures[duplicate["trial"]] == figures[duplicate["duplicate_of"]]


def test_hypervolume_history(demo_study: optuna.Study) -> None:
    hv = report_data(demo_study)["hypervolume"]
    assert hv["trials"] == list(range(32))  # failed trials keep their place, adding nothing
    values = hv["values"]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert 0.0 < values[-1] < 1.0
    rows = report_data(demo_study)["trials"]
    first_feasible = min(r["trial"] for r in rows if r["feasible"])
    assert all(v == 0.0 for v in values[:first_feasible])
    assert values[first_feasible] > 0.0


def test_heatmaps_fill_identity(demo_study: optuna.Study) -> None:
    data = report_data(demo_study)
    heat = data["heatmaps"]
    assert list(heat["knobs"]) == ["keep_ratio"]
    assert heat["trials"] == [c["trial"] for c in data["front"]]
    assert heat["layers"].index("layer2.1.conv2") < heat["layers"].index("layer10.conv1")
    grid = heat["knobs"]["keep_ratio"]
    assert grid["identity"] == 1.0
    for col, candidate in enumerate(data["front"]):
        plan = candidate["plan"]["layers"]
        for row, layer in enumerate(heat["layers"]):
            expected = plan[layer]["keep_ratio"] if layer in plan else 1.0
            assert grid["values"][row][col] == expected


def test_timeline_and_predictions(demo_study: optuna.Study, tmp_path: Path) -> None:
    data = report_data(demo_study)
    timeline = data["timeline"]
    assert len(timeline) == 32
    assert all(r["duration_s"] > 0 for r in timeline)
    assert [r["start_s"] for r in timeline] == sorted(r["start_s"] for r in timeline)
    failed = [r for r in timeline if r["state"] == "FAIL"]
    assert len(failed) == 2 and all("RuntimeError" in r["fail_reason"] for r in failed)
    assert data["predicted"]["points"] == []
    predicted = make_study(f"sqlite:///{tmp_path / 'p.db'}", complete=5, failed=0, predicted=True)
    assert len(report_data(predicted)["predicted"]["points"]) == 5


def test_study_without_baseline(tmp_path: Path) -> None:
    study = optuna.create_study(
        study_name="empty",
        storage=f"sqlite:///{tmp_path / 'e.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    data = report_data(study)
    assert data["front"] == [] and data["baseline"] is None and data["trials"] == []
    assert data["hypervolume"]["values"] == []


def test_export_command_is_shell_quoted() -> None:
    assert export_command("digits-resnet-cpu", 7) == (
        "autocompress export --study digits-resnet-cpu --trial 7 "
        "--out reports/digits-resnet-cpu/trial-7"
    )
    odd = export_command("my study; rm -rf ~", 3, "sqlite:///x.db")
    assert "--study 'my study; rm -rf ~'" in odd and "--storage sqlite:///x.db" in odd
    assert safe_dirname("<script>alert(1)</script>") == "_script_alert_1___script_"
    assert safe_dirname("..") == "study"


def test_data_module_does_not_import_plotly() -> None:
    code = "import sys, autocompress.report.data; assert 'plotly' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plain_alternatives_reach_show_json_the_table_and_the_page(tmp_path: Path) -> None:
    from rich.console import Console

    from autocompress.report.page import front_table as page_table
    from autocompress.report.table import front_table

    url = f"sqlite:///{tmp_path / 'alt.db'}"
    study = make_study(url, name="alt-cpu", complete=8, failed=0)
    base_ms = BASELINE["latency_ms"]
    alternatives = [
        {"label": "dense, ONNX Runtime fp32", "latency_ms": base_ms, "ratio": 1.0,
         "accuracy": BASELINE["accuracy"]},
        {"label": "dense, ONNX Runtime int8", "latency_ms": base_ms / 4, "ratio": 0.25,
         "accuracy": 0.0},
        {"label": "dense, OpenVINO int8", "error": "RuntimeError: no CPU"},
    ]  # fmt: skip
    study.set_user_attr("alternatives", alternatives)
    front = pareto_front(study)
    assert front
    for c in front:
        # int8 is faster but less accurate than any candidate: fp32 is the one to beat.
        assert c["best_alternative"] == "dense, ONNX Runtime fp32"
        assert c["best_alternative_ms"] == base_ms
    data = report_data(study)
    assert data["alternatives"] == alternatives
    html = page_table(data)
    assert html.count('class="alternative"') == 3
    assert "dense, ONNX Runtime int8" in html and "not measured" in html
    console = Console(width=200, record=True)
    console.print(front_table(data["baseline"], front, title="t", alternatives=alternatives))
    text = console.export_text()
    assert "dense, ONNX Runtime int8" in text and "vs alt" in text
    assert text.count("alt ") >= 3
    shown = json.loads(subprocess.run(
        [sys.executable, "-m", "autocompress", "show", "--study", "alt-cpu", "--storage", url,
         "--json"], capture_output=True, text=True, check=True, timeout=120,
    ).stdout)  # fmt: skip
    assert [c["best_alternative_ms"] for c in shown] == [base_ms] * len(front)
