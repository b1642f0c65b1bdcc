"""The retrieval suite's figures from its result as plain data (the JSON `pyramid eval --suite retrieval`
writes): single-fact accuracy against the share of KV reached, one line per mode (the kvpress
leaderboard's layout, with the share kept on x), and a needle heatmap (prompt length x depth) per mode.
"""

from __future__ import annotations

import re

from .theme import HEATMAP_COLORSCALE, empty_figure, figure, mode_color

BASELINE = "baseline"
CURVE_TITLE = "Single-fact accuracy against the share of KV reached"
SHARE_TITLE = "share of the full KV cache reached (mean over the generation)"
ACCURACY_TITLE = "exact-match accuracy, single fact"
DEPTH_TITLE = "depth of the fact (0 = the document's start)"
LENGTH_TITLE = "prompt length (tokens, at most)"
PERCENT = dict(tickformat=".0%", range=[-0.02, 1.02])


def curve_figure(points: list[dict]) -> dict:
    """points: [{"mode", "budget" (None: the mode's own share), "kv_share" (None: refused), "accuracy":
    {"single": a}}]. A mode with several points is a line over its shares; one run once is a marker;
    the baseline is also a dashed line across, the level every mode is measured against."""
    rows = [_point(p) for p in points]
    rows = [p for p in rows if p["kv_share"] is not None]
    if not rows:
        return empty_figure("no answered points")
    traces = []
    for mode in dict.fromkeys(p["mode"] for p in rows):
        mine = sorted((p for p in rows if p["mode"] == mode), key=lambda p: p["kv_share"])
        asked = ["own share" if p["budget"] is None else f"asked {p['budget']:g}" for p in mine]
        traces.append(dict(type="scatter", mode="lines+markers" if len(mine) > 1 else "markers", name=mode,
                           x=[p["kv_share"] for p in mine], y=[p["accuracy"]["single"] for p in mine],
                           text=asked, marker=dict(color=mode_color(mode), size=9),
                           line=dict(color=mode_color(mode), width=2),
                           hovertemplate=f"{mode}, %{{text}}<br>share %{{x:.3f}}<br>accuracy %{{y:.1%}}"
                                         "<extra></extra>"))
        if mode == BASELINE:
            level = mine[0]["accuracy"]["single"]
            traces.append(dict(type="scatter", mode="lines", x=[0, 1], y=[level, level], showlegend=False,
                               hoverinfo="skip", line=dict(color=mode_color(mode), dash="dash", width=1)))
    # copies: plotly writes the axis titles into the dicts it is given
    # one legend entry a mode, in a column beside the plot: seven modes above it ran into the title
    return figure(traces, CURVE_TITLE, SHARE_TITLE, ACCURACY_TITLE, xaxis=dict(PERCENT), yaxis=dict(PERCENT),
                  legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))


def needle_figure(mode: str, grid: dict, kv_share: float | None) -> dict:
    """grid: {length: {depth: accuracy}} (keys as strings or numbers) -> a heatmap, lengths up the y axis,
    depths along x, each cell labelled with its accuracy."""
    if not isinstance(grid, dict) or not all(isinstance(row, dict) for row in grid.values()):
        raise ValueError(f"a needle grid is {{length: {{depth: accuracy}}}}, got {grid!r}")
    share = "refused" if kv_share is None else f"share reached {kv_share:.2f}"
    if not grid:
        return empty_figure(f"{mode}: no single-fact task answered")
    lengths = sorted(grid, key=float)
    depths = sorted({d for row in grid.values() for d in row}, key=float)
    z = [[grid[n].get(d) for d in depths] for n in lengths]
    trace = dict(type="heatmap", x=[f"{float(d):g}" for d in depths], y=[str(n) for n in lengths], z=z,
                 zmin=0, zmax=1, colorscale=HEATMAP_COLORSCALE, texttemplate="%{z:.0%}",
                 colorbar=dict(title=dict(text="accuracy"), tickformat=".0%"),
                 hovertemplate="length %{y}, depth %{x}: %{z:.0%}<extra></extra>")
    return figure([trace], f"{mode}: single-fact accuracy ({share})", DEPTH_TITLE, LENGTH_TITLE,
                  xaxis=dict(type="category"), yaxis=dict(type="category"))


def retrieval_figures(result: dict) -> dict[str, dict]:
    """{"retrieval_curve": ..., "needle_<mode>": ...} from a suite result ("points", "grids"); mode names
    become file-safe ('+' -> '_')."""
    if "points" not in result or "grids" not in result:
        raise ValueError("a retrieval result has 'points' and 'grids'")
    figs = {"retrieval_curve": curve_figure(result["points"])}
    for mode, g in result["grids"].items():
        figs[f"needle_{re.sub(r'[^A-Za-z0-9_.-]', '_', mode)}"] = needle_figure(mode, g["grid"], g["kv_share"])
    return figs


def _point(p: dict) -> dict:
    missing = {"mode", "budget", "kv_share", "accuracy"} - set(p)
    if missing:
        raise ValueError(f"a retrieval point needs {sorted(missing)}: {p!r}")
    if p["kv_share"] is not None and "single" not in p["accuracy"]:
        raise ValueError(f"an answered point needs a single-fact accuracy: {p!r}")
    return p
