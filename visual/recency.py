"""Recency score of every query head, with the heads of replaced KV groups marked."""

from __future__ import annotations

import html

from pyramid_core.trace import RecencyReport

from .records import as_report
from .theme import HEATMAP_COLORSCALE, empty_figure, figure

HEAD_TITLE = "query head"
LAYER_TITLE = "layer"
SCORE_TITLE = "recency"
REPLACED_NAME = "replaced (linear RNN)"
NO_SCORES = "No recency scores yet: run the recency calibration first."


def recency_figure(report: RecencyReport, note: str = "") -> dict:
    """Heatmap of scores[layer][head] in [0, 1]; an 'x' marks every head of each replaced [layer, group].

    Query head h belongs to KV group h // heads_per_group. Hovering a cell also shows its sink mass.
    note: a line under the title (e.g. why no head is marked).
    """
    report = as_report(report)
    if not report.scores:
        return empty_figure(NO_SCORES)
    heads = len(report.scores[0])
    traces = [dict(
        type="heatmap", z=report.scores, x=list(range(heads)), y=list(range(len(report.scores))),
        zmin=0, zmax=1, customdata=report.sink_mass, colorscale=HEATMAP_COLORSCALE,
        colorbar=dict(title=dict(text=SCORE_TITLE)), name=SCORE_TITLE,
        hovertemplate="layer %{y}, head %{x}<br>recency %{z:.3f}<br>sink mass %{customdata:.3f}<extra></extra>",
    )]
    marked = replaced_heads(report)
    if marked:
        traces.append(dict(
            type="scatter", x=[h for _, h in marked], y=[layer for layer, _ in marked], mode="markers",
            name=REPLACED_NAME, marker=dict(symbol="x", size=10, color="white", line=dict(width=1, color="black")),
            hovertemplate="layer %{y}, head %{x}: replaced<extra></extra>",
        ))
    title = (f"Recency: attention mass on the last {report.window + 1} keys "
             f"({report.heads_per_group} query heads per KV group)")
    if note:
        title += f"<br><sup>{html.escape(note)}</sup>"
    # Plotly draws a legend only for two or more entries, and the heatmap has none: without showlegend
    # the x marks had no key in the page (issue 18)
    return figure(traces, title, HEAD_TITLE, LAYER_TITLE, showlegend=bool(marked))


def replaced_heads(report: RecencyReport) -> list[tuple[int, int]]:
    """(layer, query head) for every head of every replaced [layer, kv_group] pair, sorted."""
    g = report.heads_per_group
    return sorted({(layer, h) for layer, group in report.replaced for h in range(group * g, (group + 1) * g)})
