"""The report page's markup: sections, the sortable front table and the study's metadata.

Every value from the study goes through `html.escape`; figures arrive as ready-made divs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from statistics import mean
from typing import Any

Data = dict[str, Any]

CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124;
 margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
header h1{font-size:22px;margin:0 0 4px}
.study-name{font-family:ui-monospace,Menlo,Consolas,monospace;background:#e8eaed;padding:0 6px;
 border-radius:4px;word-break:break-all}
.summary{color:#3c4043;margin:0}
section{background:#fff;border:1px solid #e0e0e0;border-radius:8px;padding:16px 20px;margin:18px 0}
section h2{font-size:17px;margin:0 0 8px}
h3{font-size:14px;margin:14px 0 4px}
.note,.caption{color:#5f6368;font-size:13px;margin:6px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eceff1;text-align:right;white-space:nowrap}
th{background:#f1f3f4;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.text,th.text{text-align:left}
td code{font-size:12px;white-space:nowrap}
tbody.dense td{color:#5f6368;background:#fafafa}
.over{color:#d93025;font-weight:600}
.ok{color:#188038}
.scroll{overflow-x:auto}
table.meta td{text-align:left;white-space:normal;vertical-align:top}
table.meta td:first-child{color:#5f6368;width:180px}
"""

# Click a header to sort the last <tbody> by that column (numbers by data-sort, else text).
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[table.tBodies.length - 1];
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      function key(row) { var c = row.cells[col]; return c.dataset.sort || c.textContent; }
      var rows = Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var d = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_FRONT_NOTE = (
    "Blue: the Pareto front (no feasible trial is at least as good in accuracy, latency and "
    "size and better in one). Grey: dominated trials; light grey x: over budget; black diamond: "
    "the dense model; dashed red: the budgets. Hover a point for its figures and its export "
    "command; drag the 3-D view to turn it."
)


def _e(value: Any) -> str:
    return escape(str(value))


def data_script(data: Data) -> str:
    """The report's numbers as an inline JSON block that no string in it can close early.

    Args:
        data: `report_data(study)`.

    Returns:
        A `<script type="application/json" id="report-data">` element.
    """
    text = json.dumps(data, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="report-data">{text}</script>'


def _plan_text(plan: Mapping[str, Any]) -> str:
    """E.g. 'keep_ratio 0.62 over 9 layers', one part per knob the plan sets."""
    layers = plan.get("layers", {})
    if not layers:
        return "dense"
    knobs = sorted({k for cfg in layers.values() for k in cfg})
    parts = []
    for knob in knobs:
        values = [cfg[knob] for cfg in layers.values() if isinstance(cfg.get(knob), int | float)]
        parts.append(f"{knob} {mean(values):.2f}" if values else knob)
    return f"{', '.join(parts)} over {len(layers)} layers"


def _cell(text: str, sort: float | str | None = None, cls: str | None = None) -> str:
    attrs = "" if sort is None else f' data-sort="{_e(sort)}"'
    attrs += "" if cls is None else f' class="{cls}"'
    return f"<td{attrs}>{text}</td>"


def _front_row(row: Data, base: Data, export: str | None) -> str:
    dense = row["trial"] is None
    if dense:
        fits = _cell("", "")
    elif row["feasible"]:
        fits = _cell('<span class="ok">ok</span>', 1, "text")
    else:
        over = ", ".join(f"{k} +{v:.3g}" for k, v in row["violations"].items())
        fits = _cell(f'<span class="over">over</span> {_e(over)}', 0, "text")
    drop = 100 * (base["accuracy"] - row["accuracy"])
    speedup = base["latency_ms"] / row["latency_ms"]
    shrink = base["size_bytes"] / row["size_bytes"]
    cells = [
        _cell("dense" if dense else _e(row["trial"]), -1 if dense else row["trial"]),
        _cell(f"{100 * row['accuracy']:.2f}", row["accuracy"]),
        _cell("" if dense else f"{drop:+.2f}", drop),
        _cell(f"{row['latency_ms']:.3f}", row["latency_ms"]),
        _cell(f"{speedup:.2f}x", speedup),
        _cell(f"{row['size_bytes'] / 1000:.1f}", row["size_bytes"]),
        _cell(f"{shrink:.2f}x", shrink),
        fits,
        _versus_alternative(row),
        _cell(_e(_plan_text(row["plan"])), None, "text"),
        _cell(f"<code>{_e(export)}</code>" if export else "", None, "text"),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _versus_alternative(row: Data) -> str:
    best = row.get("best_alternative_ms")
    if best is None:
        return _cell("", "")
    tip = f"vs {row['best_alternative']} ({best:.3f} ms)"
    return (
        f'<td data-sort="{_e(best / row["latency_ms"])}" title="{_e(tip)}">'
        f"{best / row['latency_ms']:.2f}x</td>"
    )


def _alternative_row(alt: Data, base: Data) -> str:
    """A plain alternative under the dense row: its figures, its label in the plan column."""
    if "latency_ms" not in alt:
        label = _e(f"{alt['label']}: not measured ({alt.get('error', '')})")
        empty = "<td></td>" * 8
        return (
            f'<tr class="alternative"><td>alt</td>{empty}<td class="text">{label}</td>'
            "<td></td></tr>"
        )
    drop = 100 * (base["accuracy"] - alt["accuracy"])
    cells = [
        _cell("alt", -1),
        _cell(f"{100 * alt['accuracy']:.2f}", alt["accuracy"]),
        _cell(f"{drop:+.2f}", drop),
        _cell(f"{alt['latency_ms']:.3f}", alt["latency_ms"]),
        _cell(f"{base['latency_ms'] / alt['latency_ms']:.2f}x"),
        _cell(""),
        _cell(""),
        _cell(""),
        _cell(""),
        _cell(_e(alt["label"]), None, "text"),
        _cell(""),
    ]
    return f'<tr class="alternative">{"".join(cells)}</tr>'


def front_table(data: Data) -> str:
    """The front as a sortable HTML table, the dense model and its plain alternatives pinned
    first.

    Args:
        data: `report_data(study)`.

    Returns:
        A `<table>` element, or a note when the study has no baseline yet.
    """
    base = data["baseline"]
    if base is None:
        return '<p class="note">This study has no finished trial yet.</p>'
    metric = _e(data["meta"]["metric_name"])
    heads = [
        ("trial", ""),
        (f"{metric} %", ""),
        ("drop", "accuracy points lost vs dense"),
        ("ms", "latency per batch on the target"),
        ("faster", "dense latency / latency"),
        ("kB", "saved model size"),
        ("smaller", "dense size / size"),
        ("fits", "within budget"),
        (
            "vs alt",
            "the best plain alternative's latency / latency: the fastest alternative "
            "(rows marked alt) at least as accurate as the candidate",
        ),
        ("plan", "mean setting over the layers it changes"),
        ("export", "command"),
    ]
    head = "".join(
        f'<th title="{_e(tip)}"{" class=text" if i == 7 or i >= 9 else ""}>{name}</th>'
        for i, (name, tip) in enumerate(heads)
    )
    rows = "".join(_front_row(c, base, data["exports"].get(str(c["trial"]))) for c in data["front"])
    alts = "".join(_alternative_row(a, base) for a in data.get("alternatives") or [])
    return (
        f'<div class="scroll"><table class="sortable" id="front-table"><thead><tr>{head}</tr>'
        f'</thead><tbody class="dense">{_front_row(base, base, None)}{alts}</tbody>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _lines(mapping: Mapping[str, Any]) -> str:
    return "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in mapping.items()) or "—"


def metadata_table(data: Data) -> str:
    """Model, task, target fingerprint, budgets, space, versions and trial counts.

    Args:
        data: `report_data(study)`.

    Returns:
        A `<table class="meta">` element.
    """
    meta, budget = data["meta"], data["budget"]
    raw_budget = {k: v for k, v in budget.items() if v is not None}
    rows = [
        ("study", meta["study"]),
        ("model", meta["model"]),
        ("task", meta["task"]),
        ("metric", meta["metric_name"]),
        ("target", meta["target"]),
        ("threads when timing", meta["threads"]),
        ("batch size", meta["batch_size"]),
        ("budget", meta["budget_text"]),
        ("trials by state", ", ".join(f"{k.lower()} {v}" for k, v in meta["trial_states"].items())),
        ("report written", meta.get("generated", "")),
    ]
    cells = [f"<tr><td>{_e(k)}</td><td>{_e('—' if v is None else v)}</td></tr>" for k, v in rows]
    for name, mapping in (
        ("budget values", raw_budget),
        ("target fingerprint", meta["fingerprint"]),
        ("search space", meta["space"]),
        ("library versions", meta["versions"]),
    ):
        cells.append(f"<tr><td>{_e(name)}</td><td>{_lines(mapping)}</td></tr>")
    return f'<table class="meta">{"".join(cells)}</table>'


def _summary(data: Data) -> str:
    meta = data["meta"]
    states = meta["trial_states"]
    parts = [
        f"{meta['trials_total']} trials ({states.get('COMPLETE', 0)} complete, "
        + (f"{states['PRUNED']} stopped early, " if states.get("PRUNED") else "")
        + f"{states.get('FAIL', 0)} failed)",
        f"{len(data['front'])} candidates on the front",
        f"budget: {meta['budget_text']}",
        f"model {meta['model'] or '?'} on {meta['target'] or '?'}",
    ]
    return " · ".join(_e(p) for p in parts)


def page_html(data: Data, figures: Mapping[str, str], *, png_name: str | None = None) -> str:
    """Assemble the page.

    Args:
        data: `report_data(study)`.
        figures: figure key -> ready HTML div (`front3d`, `front2d`, `predicted`,
            `heatmap:<knob>`, `sensitivity`, `hypervolume`, `timeline`); plotly.js is inline
            in the first.
        png_name: the static front PNG beside the page, if one was written.

    Returns:
        The whole HTML document.
    """
    png = (
        f' A static copy of the 2-D front is saved beside this page as <a href="{_e(png_name)}">'
        f"{_e(png_name)}</a>."
        if png_name
        else ""
    )
    if "front3d" in figures:
        front = (
            f"{figures['front2d']}<h3>In 3-D</h3>{figures['front3d']}"
            f'<p class="note">{_FRONT_NOTE}{png}</p>'
        )
    else:
        front = '<p class="note">No trial has finished yet: nothing to draw.</p>'
    predicted = figures.get("predicted") or (
        '<p class="note">no latency predictor in this study: every latency was measured.</p>'
    )
    heatmaps = (
        "".join(
            f"<h3>{_e(key.split(':', 1)[1])}</h3>{div}"
            for key, div in figures.items()
            if key.startswith("heatmap:")
        )
        or '<p class="note">No plan on the front changes a layer.</p>'
    )
    sens = data.get("sensitivity")
    if "sensitivity" in figures and sens:
        metric, dense, where = _e(sens["metric_name"]), _e(f"{sens['dense']:.4g}"), _e(sens["file"])
        sensitivity = (
            f'<p class="note">What the {metric} loses (points, on a fixed slice of the training '
            f"split, dense {dense}) when one decision alone takes one level, BatchNorm "
            "recalibrated, no fine-tune; hover a cell for the change in the outputs. The "
            "allocated plans were built from it. Measured once per model, task and space, "
            f"cached in {where}.</p>{figures['sensitivity']}"
        )
    else:
        sensitivity = (
            '<p class="note">Not measured for this study: it allocated no per-layer plans '
            "(latency measured per trial, <code>--no-allocation</code>, or a study continued "
            "from before).</p>"
        )
    title = _e(f"autocompress report: {data['meta']['study']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{CSS}</style></head>
<body><main>
<header><h1>Study <span class="study-name">{_e(data["meta"]["study"])}</span></h1>
<p class="summary">{_summary(data)}</p></header>
<section id="front"><h2>Pareto front: accuracy, latency, size</h2>{front}</section>
<section id="table"><h2>Candidates on the front</h2>
<p class="note">Click a column to sort. Run a row's command to export that candidate.</p>
{front_table(data)}</section>
<section id="predicted"><h2>Predicted vs measured latency</h2>{predicted}</section>
<section id="plans"><h2>Plans on the front, layer by layer</h2>
<p class="note">One column per front candidate (best accuracy first); a layer a plan leaves
alone shows the identity value (keep_ratio 1.0).</p>{heatmaps}</section>
<section id="sensitivity"><h2>Sensitivity, layer by layer</h2>{sensitivity}</section>
<section id="progress"><h2>Search progress</h2><h3>Hypervolume</h3>{figures["hypervolume"]}
<p class="caption">{_e(data["hypervolume"]["caption"])}</p>
<h3>Timeline</h3>{figures["timeline"]}
<p class="caption">One bar per trial, from start to end. Hover a failed trial for its reason.</p>
</section>
<section id="metadata"><h2>Study</h2>{metadata_table(data)}</section>
</main>
{data_script(data)}
<script>{SORT_JS}</script>
</body></html>
"""
