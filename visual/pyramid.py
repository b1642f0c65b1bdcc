"""Which original positions each layer still holds, and how many: the pyramid."""

from __future__ import annotations

import numpy as np

from pyramid_core.trace import StepRecord

from .binning import MAX_COLUMNS, bin_size, bin_starts, binned_mean, dense_row
from .records import as_runs
from .theme import EMPTY_COLOR, empty_figure, figure, mode_color

HELD_TITLE = "Positions each layer holds"
KEPT_TITLE = "Kept tokens per layer"
LAYER_TITLE = "layer"
POSITION_TITLE = "original token position"
KEPT_TITLE_X = "kept tokens"
NO_RUNS = "No runs yet: generate to see what each layer keeps."
HELD_KEY = "coloured = held, grey = dropped"


def pyramid_figure(runs: dict[str, list[StepRecord]]) -> dict:
    """One heatmap panel per mode: z[layer][pos] = 1 if the layer holds original position pos, else 0.

    Each panel uses the mode's latest record with kept_positions (the prefill always has them). All
    panels share x = 0 .. the largest position seen in any of them (max held position and
    seen_tokens - 1). The panels share MAX_COLUMNS columns (a full-width figure's pixels, about): above
    that many positions a panel's columns are bins. z is the percentage of the bin's positions held.
    """
    runs = as_runs(runs)
    if not runs:
        return empty_figure(NO_RUNS)
    latest = {mode: latest_with_positions(mode, run) for mode, run in runs.items()}
    width = max(_extent(r) for r in latest.values())
    size = bin_size(width, MAX_COLUMNS // len(latest))
    traces = [_held_heatmap(mode, record.kept_positions, width, size) for mode, record in latest.items()]
    # short lines a panel (a combined mode's name broken at its "+"): seven panels fit at 1280 px
    # without their titles running together
    titles = [f"{mode.replace('+', '+<br>')}<br>step {r.step}" for mode, r in latest.items()]
    panels = side_by_side(len(traces), titles,
                          x_title=POSITION_TITLE, x_range=[-0.5, width - 0.5])
    for i, trace in enumerate(traces):
        trace["xaxis"] = "x" if i == 0 else f"x{i + 1}"
    panels["annotations"].append(dict(text=HELD_KEY, x=1.0, y=1.0, xref="paper", yref="paper", yshift=60,
                                      xanchor="right", yanchor="bottom", showarrow=False, font=dict(size=12)))
    return figure(traces, HELD_TITLE, None, LAYER_TITLE, margin=dict(t=125, b=60), **panels)


def side_by_side(n: int, titles: list[str], x_title: str, x_range: list[float], gap: float = 0.02) -> dict:
    """Layout of n panels in a row that share the y axis, each titled, under one x axis title: what
    make_subplots(1, n, shared_yaxes=True) draws, written out because make_subplots took ~30 ms, redrawn
    live each time. One shared title: five copies of it overlapped at 1280 px (issue 18)."""
    width = (1 - gap * (n - 1)) / n
    layout, annotations = {}, []
    for i, title in enumerate(titles):
        start = i * (width + gap)
        name = "xaxis" if i == 0 else f"xaxis{i + 1}"
        layout[name] = dict(domain=[start, start + width], anchor="y", range=x_range, nticks=4)
        annotations.append(dict(text=title, x=start + width / 2, y=1.0, xref="paper", yref="paper",
                                xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=12)))
    annotations.append(dict(text=x_title, x=0.5, y=0, xref="paper", yref="paper", yshift=-40,
                            xanchor="center", yanchor="top", showarrow=False, font=dict(size=13)))
    return dict(layout, yaxis=dict(anchor="x"), annotations=annotations)


def kept_tokens_figure(runs: dict[str, list[StepRecord]]) -> dict:
    """Horizontal bars of kept_tokens per layer at each mode's last record, layer 0 at the bottom."""
    runs = as_runs(runs)
    if not runs:
        return empty_figure(NO_RUNS)
    bars = [dict(type="bar", x=list(run[-1].kept_tokens), y=list(range(len(run[-1].kept_tokens))),
                 orientation="h", name=mode, marker=dict(color=mode_color(mode)),
                 hovertemplate=f"{mode}, step {run[-1].step}<br>layer %{{y}}: %{{x}} tokens<extra></extra>")
            for mode, run in runs.items()]
    return figure(bars, KEPT_TITLE, KEPT_TITLE_X, LAYER_TITLE, barmode="group")


def latest_with_positions(mode: str, run: list[StepRecord]) -> StepRecord:
    """The last record of a run that has kept_positions; ValueError when none has (the prefill must)."""
    for record in reversed(run):
        if record.kept_positions is not None:
            return record
    raise ValueError(f"run {mode!r} has no record with kept_positions (the prefill must carry them)")


def _extent(record: StepRecord) -> int:
    """1 + the largest position seen or held (max per layer: a list of every held position took ~3 ms a
    mode for a 3000-token prompt)."""
    return max(1, record.seen_tokens, *(max(positions, default=-1) + 1 for positions in record.kept_positions))


def _held_heatmap(mode: str, kept_positions: list[list[int]], width: int, size: int) -> dict:
    z = np.stack([binned_mean(dense_row(positions, 100.0, width), size) for positions in kept_positions])
    # Plotly sends arrays as base64 of their dtype: a byte a cell as whole percents, which the colour
    # and the hover show no finer (float32 fractions made seven panels of a 3000-token prompt ~490 KB
    # each time the live view redrew them, issue 18)
    return dict(
        type="heatmap", z=np.rint(z).astype(np.uint8), x=bin_starts(width, size), y=list(range(len(kept_positions))),
        zmin=0, zmax=100, showscale=False, name=mode,
        colorscale=[[0.0, EMPTY_COLOR], [1.0, mode_color(mode)]],
        hovertemplate=f"{mode}<br>layer %{{y}}, position %{{x}}<br>held %{{z}}%<extra></extra>",
    )
