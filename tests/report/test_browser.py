"""The report in a real headless Chromium: every plot draws, no JavaScript error, markup stays text.

A small script is injected at the top of a copy of the page: it records errors, console.error
calls and alerts, and after the page settles it writes what it found (figures drawn, the study
name as text, the table order after a click on a header) into the DOM that `--dump-dom` prints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest

from autocompress.report.html import find_browser, run_headless, write_report
from tests.report.conftest import make_study

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chrome-compatible browser (apt-get install chromium)"
)

PROBE = """<script>
window.__errors = [];
function __record(m) { window.__errors.push(String(m)); }
window.addEventListener("error", function (e) {
  __record("error: " + (e.message || e.type));
}, true);
window.addEventListener("unhandledrejection", function (e) { __record("rejection: " + e.reason); });
var __consoleError = console.error;
console.error = function () {
  __record("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.alert = function (m) { __record("alert: " + m); };
window.addEventListener("load", function () { setTimeout(function () {
  var figures = {};
  document.querySelectorAll(".plotly-graph-div").forEach(function (div) {
    figures[div.id] = {
      containers: div.querySelectorAll(".plot-container").length,
      svgs: div.querySelectorAll("svg.main-svg").length,
      canvases: div.querySelectorAll("canvas").length,
      points: div.querySelectorAll("path.point").length,
      bars: div.querySelectorAll(".bars path").length,
      heat: div.querySelectorAll(".hm image, .heatmaplayer image").length,
      lines: div.querySelectorAll(".scatterlayer .js-line").length
    };
  });
  var order = function () {
    return Array.prototype.map.call(
      document.querySelectorAll("#front-table tbody:last-child tr"),
      function (r) { return [r.cells[0].textContent, parseFloat(r.cells[3].dataset.sort)]; });
  };
  var before = order();
  var ms = document.querySelectorAll("#front-table th")[3];
  if (ms) { ms.click(); }
  var out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    errors: window.__errors,
    figures: figures,
    study_name: (document.querySelector(".study-name") || {}).textContent,
    title: document.title,
    order_before: before,
    order_after_ms: order(),
    plotly: typeof window.Plotly
  });
  document.body.appendChild(out);
}, 1500); });
</script>"""


def _render(page: Path) -> dict[str, Any]:
    """Open a probed copy of `page` in headless Chromium; return what the probe saw."""
    html = page.read_text(encoding="utf-8")
    probed = page.with_name("probed.html")
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    assert BROWSER is not None
    dom = run_headless(BROWSER, probed.as_uri(), "--virtual-time-budget=10000", "--dump-dom")
    match = re.search(r'<pre id="__probe">(.*?)</pre>', dom, re.S)
    assert match, "the page never finished loading (no probe output in the DOM)"
    text = match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    result: dict[str, Any] = json.loads(text.replace("&amp;", "&"))
    result["dom"] = dom
    return result


@pytest.fixture(scope="module")
def rendered(study_db: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    study = optuna.load_study(study_name="demo-cpu", storage=study_db)
    out = tmp_path_factory.mktemp("report")
    page = write_report(study, out, storage_url=study_db)
    result = _render(page)
    result["page"] = page
    return result


def test_every_plot_draws_without_errors(rendered: dict[str, Any]) -> None:
    assert rendered["errors"] == []
    assert rendered["plotly"] == "object"
    figures = rendered["figures"]
    assert set(figures) == {
        "fig-front3d",
        "fig-front2d",
        "fig-heatmap-keep_ratio",
        "fig-hypervolume",
        "fig-timeline",
    }
    for name, drawn in figures.items():
        assert drawn["containers"] == 1 and drawn["svgs"] >= 1, name
    assert figures["fig-front3d"]["canvases"] >= 1  # the 3-D scene is WebGL
    assert figures["fig-front2d"]["points"] == 2 * (30 + 1)  # every trial + dense, two panels
    assert figures["fig-heatmap-keep_ratio"]["heat"] >= 1
    assert figures["fig-hypervolume"]["lines"] >= 1
    assert figures["fig-timeline"]["bars"] == 32
    assert "no latency predictor in this study" in rendered["dom"]


def test_table_sorts_on_click(rendered: dict[str, Any]) -> None:
    before, after = rendered["order_before"], rendered["order_after_ms"]
    assert len(before) >= 2 and sorted(before) == sorted(after)
    assert [ms for _, ms in before] != sorted(ms for _, ms in before)  # best accuracy first
    assert [ms for _, ms in after] == sorted(ms for _, ms in after)


def test_page_is_self_contained_and_small(rendered: dict[str, Any]) -> None:
    page: Path = rendered["page"]
    assert page.stat().st_size <= 10 * 1024 * 1024
    html = page.read_text(encoding="utf-8")
    assert html.count("plotly.js v") == 1  # the library inline, once
    assert not re.search(r'<script[^>]+src=|<link[^>]+href="http', html)
    assert (page.parent / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markup_in_a_study_name_stays_text(tmp_path: Path) -> None:
    name = "<script>alert(1)</script>"
    study = make_study(f"sqlite:///{tmp_path / 'x.db'}", name, complete=6, failed=1)
    page = write_report(study, tmp_path / "out")
    html = page.read_text(encoding="utf-8")
    assert name not in html
    rendered = _render(page)
    assert rendered["errors"] == []
    assert rendered["study_name"] == name
    assert rendered["title"] == f"autocompress report: {name}"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered["dom"]
