"""The one look shared by every figure: a template, a colour per mode, the figure builder and the
empty figure.

A figure is Plotly's figure dict, {"data": [trace dicts], "layout": {...}}, which every Plotly entry point
takes (go.Figure(fig), plotly.io.to_json, write_html) and plotly.js draws as is. Not a go.Figure: building
one cost 2-3 ms a figure even without its property checks, and serialising it again as much (a deep copy,
then base64), about half of the studio's final update (issue 18)."""

from __future__ import annotations

import zlib

from pyramid_core.trace import MODES as KNOWN_MODES

MODES = tuple(m.name for m in KNOWN_MODES)  # in pane order
MODE_COLORS = {m.name: m.color for m in KNOWN_MODES}
# Unknown modes take a colour from this cycle, indexed by a stable hash of the name so a mode keeps
# its colour in every figure and every session.
EXTRA_COLORS = ("#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
ATTENTION_COLOR = "#1f77b4"
HEATMAP_COLORSCALE = "Viridis"
EMPTY_COLOR = "#f2f2f2"  # 0 cells of the held-positions heatmaps

# A white look written out as layout settings alone: copying plotly's full "plotly_white" template
# into every figure cost ~20 ms a figure, which a live view redrawing five figures pays each time.
_AXIS = dict(gridcolor="#ebf0f8", linecolor="#ebf0f8", zerolinecolor="#ebf0f8", ticks="", automargin=True)
TEMPLATE = dict(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white",
    font=dict(size=13, color="#2a3f5f"),
    title=dict(x=0.01, xanchor="left"),
    margin=dict(l=60, r=20, t=70, b=50),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0),
    hovermode="closest",
    xaxis=_AXIS, yaxis=_AXIS,
))


def mode_color(mode: str) -> str:
    """The colour of a mode: fixed for the known modes, from EXTRA_COLORS for any other name."""
    if mode in MODE_COLORS:
        return MODE_COLORS[mode]
    return EXTRA_COLORS[zlib.crc32(mode.encode()) % len(EXTRA_COLORS)]


def figure(traces: list[dict], title: str, x_title: str | None = None, y_title: str | None = None,
           **layout) -> dict:
    """A figure dict in the one look from trace dicts (each names its "type") and layout settings, both
    written out as plotly.js reads them (nested dicts: marker=dict(color=...), not marker_color); uirevision
    keeps the user's zoom across live updates.

    Nothing checks the properties here; tests/test_visual.py builds every figure function's output as a
    go.Figure with Plotly's checks on, so a misspelt property fails there.
    """
    for axis, text in (("xaxis", x_title), ("yaxis", y_title)):
        if text is not None:
            layout[axis] = {**layout.get(axis, {}), "title": {"text": text}}
    layout.update(template=TEMPLATE, title={"text": title}, uirevision=title)
    return {"data": traces, "layout": layout}


def empty_figure(message: str) -> dict:
    """A figure with no data and `message` in its middle, for 'nothing to show yet'."""
    note = dict(text=message, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=16))
    return figure([], "", annotations=[note], xaxis=dict(visible=False), yaxis=dict(visible=False))
