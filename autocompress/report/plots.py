"""Plotly figures drawn from `report_data`'s dict; no numbers are computed here.

Every string that comes from the study (names, layer names, failure messages) is HTML-escaped
before it reaches a figure: plotly renders a subset of HTML in labels and hover text.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

Data = dict[str, Any]

TEMPLATE = "plotly_white"
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}
# name shown in the legend, marker colour, marker symbol, drawn on top when later in the list
STYLES = {
    "infeasible": ("over budget", "#d0d0d0", "x"),
    "dominated": ("dominated", "#a8a8a8", "circle"),
    "front": ("Pareto front", "#1f6fd1", "circle"),
    "front_over": ("front, over budget (no trial fits)", "#e8710a", "circle"),
}
STATE_COLOURS = {
    "COMPLETE": "#1f6fd1",
    "FAIL": "#d93025",
    "RUNNING": "#e8710a",
    "PRUNED": "#9aa0a6",
    "WAITING": "#dadce0",
}
BUDGET_COLOUR = "#d93025"


def _pct(x: float) -> float:
    return 100.0 * x


def _hover(row: Data, metric: str, export: str | None) -> str:
    """Hover text of one point: trial, figures and its export command, all escaped."""
    lines = [
        f"<b>trial {row['trial']}</b>" if row.get("trial") is not None else "<b>dense model</b>",
        f"{escape(metric)}: {_pct(row['accuracy']):.2f} %",
        f"latency: {row['latency_ms']:.3f} ms",
        f"size: {row['size_bytes'] / 1000:.1f} kB",
    ]
    if row.get("violations"):
        over = ", ".join(f"{escape(k)} +{v:.3g}" for k, v in row["violations"].items())
        lines.append(f"over budget: {over}")
    if row.get("duplicate_of") is not None:
        lines.append(f"same plan as trial {row['duplicate_of']}")
    if row.get("finetune_undone"):
        lines.append("fine-tune undone (it scored lower on training batches than before)")
    elif row.get("finetuned") is False and row.get("trial") is not None:
        lines.append("not fine-tuned (far over budget)")
    if export:
        lines.append(escape(export))
    return "<br>".join(lines)


def _groups(data: Data) -> list[tuple[str, list[Data]]]:
    """Trials split by how they are drawn, in drawing order (the front last, on top)."""
    groups: dict[str, list[Data]] = {key: [] for key in STYLES}
    for row in data["trials"]:
        key = row["category"]
        if key == "front" and not row["feasible"]:
            key = "front_over"
        groups[key].append(row)
    return [(key, rows) for key, rows in groups.items() if rows]


def _metric(data: Data) -> str:
    return str(data["meta"].get("metric_name") or "accuracy")


def front_3d(data: Data) -> Figure:
    """Latency x size x accuracy of every complete trial, the front in colour, dense marked.

    Args:
        data: `report_data(study)`.

    Returns:
        A plotly Figure.
    """
    import plotly.graph_objects as go

    metric = _metric(data)
    fig = go.Figure()
    for key, rows in _groups(data):
        name, colour, symbol = STYLES[key]
        fig.add_trace(
            go.Scatter3d(
                x=[r["latency_ms"] for r in rows],
                y=[r["size_bytes"] / 1000 for r in rows],
                z=[_pct(r["accuracy"]) for r in rows],
                mode="markers",
                name=name,
                marker={
                    "size": 6 if key.startswith("front") else 4,
                    "color": colour,
                    "symbol": "x" if symbol == "x" else "circle",
                },
                hovertext=[_hover(r, metric, r["export"]) for r in rows],
                hoverinfo="text",
            )
        )
    base = data["baseline"]
    if base is not None:
        fig.add_trace(
            go.Scatter3d(
                x=[base["latency_ms"]],
                y=[base["size_bytes"] / 1000],
                z=[_pct(base["accuracy"])],
                mode="markers",
                name="dense model",
                marker={"size": 7, "color": "#202124", "symbol": "diamond"},
                hovertext=[_hover(base, metric, None)],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        height=560,
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        scene={
            "xaxis_title": "latency (ms)",
            "yaxis_title": "size (kB)",
            "zaxis_title": f"{escape(metric)} (%)",
        },
    )
    return fig


def front_2d(data: Data, *, width: int | None = None) -> Figure:
    """Accuracy vs latency and accuracy vs size side by side, with the budget lines.

    Args:
        data: `report_data(study)`.
        width: fixed width in pixels (for the static PNG); None fills the page.

    Returns:
        A plotly Figure with two panels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metric = _metric(data)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=(f"{escape(metric)} vs latency", f"{escape(metric)} vs size"),
    )
    points = [(key, rows) for key, rows in _groups(data)]
    base = data["baseline"]
    for col, (field, scale) in enumerate((("latency_ms", 1.0), ("size_bytes", 1e-3)), start=1):
        for key, rows in points:
            name, colour, symbol = STYLES[key]
            fig.add_trace(
                go.Scatter(
                    x=[r[field] * scale for r in rows],
                    y=[_pct(r["accuracy"]) for r in rows],
                    mode="markers",
                    name=name,
                    legendgroup=key,
                    showlegend=col == 1,
                    marker={
                        "size": 9 if key.startswith("front") else 7,
                        "color": colour,
                        "symbol": symbol,
                        "line": {"width": 0.5, "color": "white"},
                    },
                    hovertext=[_hover(r, metric, r["export"]) for r in rows],
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
        if base is not None:
            fig.add_trace(
                go.Scatter(
                    x=[base[field] * scale],
                    y=[_pct(base["accuracy"])],
                    mode="markers+text",
                    text=["dense"],
                    textposition="bottom left",
                    name="dense model",
                    legendgroup="dense",
                    showlegend=col == 1,
                    marker={"size": 12, "color": "#202124", "symbol": "diamond"},
                    hovertext=[_hover(base, metric, None)],
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
    _budget_lines(fig, data)
    fig.update_xaxes(title_text="latency (ms)", row=1, col=1)
    fig.update_xaxes(title_text="size (kB)", row=1, col=2)
    fig.update_yaxes(title_text=f"{escape(metric)} (%)", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        height=460,
        width=width,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},  # subplot titles clear the modebar
        legend={"orientation": "h", "y": -0.18, "x": 0},
    )
    return fig


def _budget_lines(fig: Figure, data: Data) -> None:
    budget = data["budget"]
    line = {"color": BUDGET_COLOUR, "dash": "dash", "width": 1.5}
    if budget["latency_ms"] is not None:
        fig.add_vline(
            x=budget["latency_ms"],
            line=line,
            row=1,
            col=1,
            annotation_text=f"budget {budget['latency_ms']:g} ms",
            annotation_position="top right",
            annotation_font_color=BUDGET_COLOUR,
        )
    if budget["size_bytes"] is not None:
        fig.add_vline(
            x=budget["size_bytes"] / 1000,
            line=line,
            row=1,
            col=2,
            annotation_text=f"budget {budget['size_bytes'] / 1000:g} kB",
            annotation_position="top right",
            annotation_font_color=BUDGET_COLOUR,
        )
    if budget["accuracy_floor"] is not None:
        for col in (1, 2):
            fig.add_hline(
                y=_pct(budget["accuracy_floor"]),
                line=line,
                row=1,
                col=col,
                annotation_text=f"floor {_pct(budget['accuracy_floor']):.2f} %" if col == 1 else "",
                annotation_position="bottom right",
                annotation_font_color=BUDGET_COLOUR,
            )


def _grid_layout(fig: Figure, *, rows: int, across: str) -> None:
    """A layers-down heatmap's layout: a row per layer, categories across titled `across`."""
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        height=max(260, 80 + 22 * rows),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        xaxis={"title": across, "type": "category", "side": "bottom"},
        yaxis={"autorange": "reversed", "type": "category", "automargin": True},
    )


def plan_heatmaps(data: Data) -> list[tuple[str, Figure]]:
    """One heatmap per knob the front's plans set: layers down, front candidates across.

    Args:
        data: `report_data(study)`.

    Returns:
        (knob name, Figure) pairs; empty when the front holds no plan that changes a layer.
    """
    heat = data["heatmaps"]
    if not heat["layers"] or not heat["trials"]:
        return []
    import plotly.graph_objects as go

    columns = [f"#{t}" for t in heat["trials"]]
    layers = [escape(name) for name in heat["layers"]]
    figures = []
    for knob, grid in heat["knobs"].items():
        fig = go.Figure(
            go.Heatmap(
                z=grid["values"],
                x=columns,
                y=layers,
                colorscale="Blues",
                reversescale=True,
                zmin=0.0 if knob.endswith("ratio") else None,
                zmax=1.0 if knob.endswith("ratio") else None,
                texttemplate="%{z:.3g}",
                textfont={"size": 10},
                colorbar={"title": {"text": escape(knob)}},
                hovertemplate=f"layer %{{y}}<br>trial %{{x}}<br>{escape(knob)} %{{z}}"
                "<extra></extra>",
                xgap=1,
                ygap=1,
            )
        )
        _grid_layout(fig, rows=len(layers), across="front candidate (trial)")
        figures.append((knob, fig))
    return figures


def sensitivity_heatmap(data: Data) -> Figure | None:
    """The per-layer sensitivity the allocated plans came from: decisions down, levels across,
    coloured by what the metric loses (points) with that one change alone.

    Args:
        data: `report_data(study)`.

    Returns:
        The figure; None when the study holds no sensitivity (no plans were allocated).
    """
    sens = data.get("sensitivity")
    if not sens:
        return None
    import plotly.graph_objects as go

    rows = [escape(name) for name in sens["rows"]]
    levels = [escape(level) for level in sens["levels"]]
    distortion = [["n/a" if d is None else f"{d:.3g}" for d in row] for row in sens["distortion"]]
    metric = escape(sens["metric_name"])
    fig = go.Figure(
        go.Heatmap(
            z=sens["drop_points"],
            x=levels,
            y=rows,
            customdata=distortion,
            colorscale="Reds",
            zmin=0.0,
            texttemplate="%{z:.2g}",
            textfont={"size": 10},
            colorbar={"title": {"text": f"{metric} lost (points)"}},
            hovertemplate=f"%{{y}}<br>%{{x}}<br>{metric} lost %{{z:.3g}} points"
            "<br>output distortion %{customdata}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    _grid_layout(fig, rows=len(rows), across="level (that change alone)")
    return fig
