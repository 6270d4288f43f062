"""The page without a browser: CLI, errors, escaping, the PNG notice, the hook in search()."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

import autocompress.report.html as report_html
from autocompress.cli import main
from autocompress.report.data import report_data
from autocompress.report.html import build_page, write_report
from tests.report.conftest import GROUPS, make_study


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend no Chrome-compatible browser is installed (also keeps these tests fast)."""
    monkeypatch.setattr(report_html, "find_browser", lambda: None)


def test_cli_report_without_browser(
    study_db: str,
    tmp_path: Path,
    no_browser: None,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "front.png").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING):
        code = main(["report", "--study", "demo-cpu", "--storage", study_db, "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    assert (out / "index.html").stat().st_size <= 10 * 1024 * 1024
    assert not (out / "front.png").exists(), "a PNG of an older run must not survive"
    notices = [r.getMessage() for r in caplog.records if "front.png" in r.getMessage()]
    assert notices == [
        "front.png skipped: no Chrome-compatible browser found "
        "(install chromium or set BROWSER_PATH)"
    ]


def test_cli_report_errors(
    study_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--study", "nope", "--storage", study_db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autocompress: error: no study 'nope'") and "demo-cpu" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "report"  # a folder cannot be made inside a file, even by root
    assert main(["report", "--study", "demo-cpu", "--storage", study_db, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot write the report to" in err and "choose a writable --out" in err


def test_default_folder_and_escaping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_browser: None
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "<script>alert(1)</script>"
    study = make_study(f"sqlite:///{tmp_path / 'x.db'}", name, complete=4, failed=1)
    page = write_report(study)
    assert page == Path("reports/_script_alert_1___script_/index.html")
    html = page.read_text(encoding="utf-8")
    assert name not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("plotly.js v") == 1


def test_predictions_drawn_when_present(tmp_path: Path) -> None:
    study = make_study(f"sqlite:///{tmp_path / 'p.db'}", complete=5, failed=0, predicted=True)
    html = build_page(report_data(study))
    assert 'id="fig-predicted"' in html
    assert "no latency predictor in this study" not in html


def test_empty_study_still_writes_a_page(tmp_path: Path, no_browser: None) -> None:
    study = optuna.create_study(
        study_name="empty",
        storage=f"sqlite:///{tmp_path / 'e.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    html = write_report(study, tmp_path / "out").read_text(encoding="utf-8")
    assert "No trial has finished yet" in html and "no finished trial yet" in html


def test_search_hook_writes_or_warns(
    demo_study: optuna.Study,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_browser: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from autocompress.api import _write_report

    monkeypatch.chdir(tmp_path)
    assert _write_report(demo_study, None) == Path("reports/demo-cpu/index.html")
    assert Path("reports/demo-cpu/index.html").is_file()
    Path("reports/demo-cpu/index.html").unlink()
    Path("reports/demo-cpu").rmdir()
    Path("reports/demo-cpu").write_text("")  # a file where the folder should be
    with caplog.at_level(logging.WARNING):
        assert _write_report(demo_study, None) is None  # the search's results still come back
    assert any("report not written: cannot write" in r.getMessage() for r in caplog.records)


def test_hover_shows_trial_figures_and_export(demo_study: optuna.Study) -> None:
    from autocompress.report.plots import front_2d, front_3d

    data = report_data(demo_study)
    for fig in (front_2d(data), front_3d(data)):
        hover = " ".join(t for trace in fig.data if trace.hovertext for t in trace.hovertext)
        for candidate in data["front"]:
            assert f"<b>trial {candidate['trial']}</b>" in hover
            assert data["exports"][str(candidate["trial"])] in hover
        assert "<b>dense model</b>" in hover and "latency: " in hover and "size: " in hover


def test_the_sensitivity_the_plans_came_from_is_drawn_as_a_grid(tmp_path: Path) -> None:
    from autocompress.optimize import record

    study = make_study(f"sqlite:///{tmp_path / 's.db'}", complete=5, failed=0)
    html = build_page(report_data(study))
    assert 'id="fig-sensitivity"' not in html and "it allocated no per-layer plans" in html

    rows = [
        {"param": "keep_ratio:stem.0", "setting": "keep_ratio", "value": 0.5,
         "layers": GROUPS["stem.0"], "drop": 0.031, "distortion": 0.2},
        {"param": "keep_ratio:layer10.conv1", "setting": "keep_ratio", "value": 0.5,
         "layers": ["layer10.conv1"], "drop": 0.0, "distortion": 0.01},
        {"param": "weight_bits:layer2.0.conv1", "setting": "weight_bits", "value": 8,
         "layers": ["layer2.0.conv1"], "drop": 0.002, "distortion": None},
    ]  # fmt: skip
    record.write_sensitivity(study, metric_name="top1", dense=1.0, rows=rows, file="s.json")
    data = report_data(study)
    grid = data["sensitivity"]
    # decisions in natural order (layer2 before layer10), levels in the order first measured
    assert grid["rows"] == ["layer2.0.conv1", "layer10.conv1", "stem.0 +2 coupled"]
    assert grid["levels"] == ["keep_ratio 0.5", "weight_bits 8"]
    assert grid["drop_points"] == [[None, 0.2], [0.0, None], [pytest.approx(3.1), None]]
    assert grid["distortion"] == [[None, None], [0.01, None], [0.2, None]]
    html = build_page(data)
    assert 'id="fig-sensitivity"' in html and "cached in s.json" in html
