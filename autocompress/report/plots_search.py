"""Plotly figures of how the search went: hypervolume, trial timeline, predicted vs measured.

Drawn from `report_data`'s dict; strings from the study are HTML-escaped as in `plots`.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from autocompress.report.plots import FONT, STATE_COLOURS, STYLES, TEMPLATE

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

Data = dict[str, Any]


def predicted_vs_measured(data: Data) -> Figure | None:
    """Predicted against measured latency with the ±10% band; None when nothing was predicted.

    Args:
        data: `report_data(study)`.

    Returns:
        A plotly Figure, or None when no trial carries `predicted_ms`.
    """
    points = data["predicted"]["points"]
    if not points:
        return None
    import plotly.graph_objects as go

    band = data["predicted"]["band"]
    top = 1.1 * max(max(p["measured_ms"], p["predicted_ms"]) for p in points)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, top, top, 0],
            y=[0, top * (1 + band), top * (1 - band), 0],
            fill="toself",
            fillcolor="rgba(31,111,209,0.12)",
            line={"width": 0},
            name=f"±{100 * band:g} %",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            name="predicted = measured",
            line={"color": "#5f6368", "dash": "dot"},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p["measured_ms"] for p in points],
            y=[p["predicted_ms"] for p in points],
            mode="markers",
            name="trials",
            marker={"color": STYLES["front"][1], "size": 8},
            hovertext=[
                f"trial {p['trial']}<br>measured {p['measured_ms']:.3f} ms"
                f"<br>predicted {p['predicted_ms']:.3f} ms"
                for p in points
            ],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        height=420,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        xaxis={"title": "measured latency (ms)", "range": [0, top]},
        yaxis={"title": "predicted latency (ms)", "range": [0, top]},
    )
    return fig


def hypervolume_history(data: Data) -> Figure:
    """Hypervolume after each trial.

    Args:
        data: `report_data(study)`.

    Returns:
        A plotly Figure (a step line; flat where a trial added nothing).
    """
    import plotly.graph_objects as go

    hv = data["hypervolume"]
    fig = go.Figure(
        go.Scatter(
            x=hv["trials"],
            y=hv["values"],
            mode="lines+markers",
            line={"shape": "hv"},
            marker={"size": 5, "color": STYLES["front"][1]},
            name="hypervolume",
            hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        height=320,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": "trial"},
        yaxis={"title": "hypervolume", "rangemode": "tozero"},
    )
    return fig


_STATE_LABELS = {"PRUNED": "stopped early"}  # autocompress prunes only by early stopping


def timeline(data: Data) -> Figure:
    """When each trial ran and for how long, coloured by state; failures say why on hover.

    Args:
        data: `report_data(study)`.

    Returns:
        A plotly Figure of horizontal bars (seconds since the first trial started).
    """
    import plotly.graph_objects as go

    rows = [r for r in data["timeline"] if r["duration_s"] is not None]
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        some = [r for r in rows if r["state"] == state]
        if not some:
            continue
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[r["trial"] for r in some],
                x=[max(r["duration_s"], 0.05) for r in some],
                base=[r["start_s"] for r in some],
                width=[0.8] * len(some),  # else a state with few trials gets very thick bars
                marker={"color": colour},
                name=_STATE_LABELS.get(state, state.lower()),
                hovertext=[_timeline_hover(r) for r in some],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        font=FONT,
        barmode="overlay",
        bargap=0.15,
        height=min(900, 140 + 9 * max(len(rows), 10)),
        margin={"l": 60, "r": 20, "t": 10, "b": 50},
        xaxis={"title": "seconds since the first trial started"},
        yaxis={"title": "trial", "autorange": "reversed"},
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
    )
    return fig


def _timeline_hover(row: Data) -> str:
    state = _STATE_LABELS.get(row["state"], row["state"].lower())
    lines = [
        f"<b>trial {row['trial']}</b> · {state}",
        f"{row['duration_s']:.1f} s, started {escape(row['start'])}",
    ]
    if row.get("fail_reason"):
        lines.append(escape(str(row["fail_reason"])[:300]))
    if row.get("stop_reason"):
        lines.append("stopped early: " + escape(str(row["stop_reason"])[:300]))
    for note in row.get("not_applied", [])[:3]:
        lines.append("not applied: " + escape(str(note)[:200]))
    return "<br>".join(lines)
