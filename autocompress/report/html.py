"""The study report: one self-contained HTML page (plotly.js inline, opens offline from disk).

Also writes `front.png` (the 2-D front) beside it when a Chrome-compatible browser is present:
a headless-browser screenshot of a tiny page holding just that figure. Kaleido works with
Debian's chromium too, but it adds four packages and drives the browser over a live DevTools
connection; one `chromium --screenshot` subprocess needs no package, is killed cleanly by its
timeout, and is the same invocation the browser test exercises.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress.errors import UserInputError
from autocompress.report.data import report_data, safe_dirname
from autocompress.report.page import page_html

if TYPE_CHECKING:
    import optuna
    from plotly.graph_objects import Figure

log = logging.getLogger(__name__)

# Headless Chromium flags that keep it offline, quiet and free of the user's profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PNG_SIZE = (1000, 460)
PNG_TIMEOUT_S = 60


def find_browser() -> str | None:
    """A Chrome-compatible browser: $BROWSER_PATH when it exists, else the first on PATH.

    Returns:
        The executable's path, or None when there is none.
    """
    configured = os.environ.get("BROWSER_PATH")
    if configured and Path(configured).is_file():
        return configured
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def run_headless(browser: str, url: str, *extra: str, timeout_s: float = PNG_TIMEOUT_S) -> str:
    """Run the browser headless on `url` with a fresh profile; return its stdout.

    Args:
        browser: from `find_browser`.
        url: the page (a file:// URL for a page on disk).
        extra: more flags, e.g. `--dump-dom` or `--screenshot=...`.
        timeout_s: kill it after this long.

    Returns:
        What the browser printed on stdout (the DOM with `--dump-dom`).

    Raises:
        RuntimeError: the browser exited with an error or ran past the timeout.
    """
    with tempfile.TemporaryDirectory(
        prefix="autocompress-browser-", ignore_cleanup_errors=True
    ) as profile:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{browser} ran past {timeout_s:g} s") from None
        except OSError as exc:
            raise RuntimeError(f"cannot run {browser}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"{browser} exited with {done.returncode}: {tail[0]}")
    return done.stdout


def _figure_div(fig: Figure, div_id: str, *, with_plotlyjs: bool, static: bool = False) -> str:
    config = {"displaylogo": False, "responsive": True, "staticPlot": static}
    return fig.to_html(
        full_html=False, include_plotlyjs=with_plotlyjs, div_id=div_id, config=config
    )


def write_front_png(data: dict[str, Any], path: Path) -> Path | None:
    """Write the 2-D front as a PNG, or skip with a one-line notice when no browser can.

    Args:
        data: `report_data(study)`.
        path: where the PNG goes.

    Returns:
        The path, or None when it was skipped (an older PNG there is removed).
    """
    from autocompress.report.plots import front_2d

    path.unlink(missing_ok=True)
    browser = find_browser()
    if browser is None:
        log.warning(
            "front.png skipped: no Chrome-compatible browser found "
            "(install chromium or set BROWSER_PATH)"
        )
        return None
    width, height = PNG_SIZE
    fig = front_2d(data, width=width)
    study = escape(str(data["meta"]["study"]))
    fig.update_layout(
        height=height,
        title={"text": f"Pareto front of study {study}", "x": 0.01, "font": {"size": 15}},
        margin={"t": 80},
    )
    div = _figure_div(fig, "front-png", with_plotlyjs=True, static=True)
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
        f'<body style="margin:0;background:#fff">{div}</body></html>'
    )
    with tempfile.TemporaryDirectory(prefix="autocompress-png-") as tmp:
        source = Path(tmp) / "front.html"
        source.write_text(page, encoding="utf-8")
        shot = Path(tmp) / "front.png"
        try:
            run_headless(
                browser,
                source.as_uri(),
                f"--screenshot={shot}",
                f"--window-size={width},{height}",
                "--force-device-scale-factor=2",
                "--virtual-time-budget=5000",
            )
            if not shot.is_file() or shot.stat().st_size == 0:
                raise RuntimeError("it wrote no screenshot")
        except RuntimeError as exc:
            log.warning("front.png skipped: %s", exc)
            return None
        shutil.copyfile(shot, path)
    return path


def build_page(data: dict[str, Any], *, png_name: str | None = None) -> str:
    """The whole page as one string (plotly.js inline once, every figure after it).

    Args:
        data: `report_data(study)`.
        png_name: the static PNG's file name beside the page, when one was written.

    Returns:
        HTML text.
    """
    from autocompress.report import plots, plots_search

    included = False

    def draw(fig: Figure, div_id: str) -> str:
        nonlocal included
        html = _figure_div(fig, div_id, with_plotlyjs=not included)
        included = True
        return html

    figures: dict[str, str] = {}
    if data["trials"]:
        # drawn in page order: the first figure on the page carries plotly.js
        figures["front2d"] = draw(plots.front_2d(data), "fig-front2d")
        figures["front3d"] = draw(plots.front_3d(data), "fig-front3d")
    predicted = plots_search.predicted_vs_measured(data)
    if predicted is not None:
        figures["predicted"] = draw(predicted, "fig-predicted")
    for knob, fig in plots.plan_heatmaps(data):
        figures[f"heatmap:{knob}"] = draw(fig, f"fig-heatmap-{safe_dirname(knob)}")
    sensitivity = plots.sensitivity_heatmap(data)
    if sensitivity is not None:
        figures["sensitivity"] = draw(sensitivity, "fig-sensitivity")
    figures["hypervolume"] = draw(plots_search.hypervolume_history(data), "fig-hypervolume")
    figures["timeline"] = draw(plots_search.timeline(data), "fig-timeline")
    return page_html(data, figures, png_name=png_name)


def write_report(
    study: optuna.Study, out_dir: str | Path | None = None, *, storage_url: str | None = None
) -> Path:
    """Write `index.html` (and `front.png` when a browser is present) for one study.

    Args:
        study: the study to report on.
        out_dir: the folder; default `reports/<study>/` (odd characters in the name become `_`).
        storage_url: the storage the study lives in; named in the export commands.

    Returns:
        The path of `index.html`.

    Raises:
        UserInputError: the folder cannot be created or written.
    """
    folder = (
        Path(out_dir) if out_dir is not None else Path("reports") / safe_dirname(study.study_name)
    )
    data = report_data(study, storage_url=storage_url)
    data["meta"]["generated"] = datetime.now().astimezone().isoformat(timespec="seconds")
    target = folder / "index.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".index.html.tmp"
        probe.write_text("", encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserInputError(
            f"cannot write the report to {str(folder)!r}: {reason}; choose a writable --out"
        ) from None
    png = write_front_png(data, folder / "front.png")
    probe.write_text(build_page(data, png_name=png.name if png else None), encoding="utf-8")
    probe.replace(target)
    return target
