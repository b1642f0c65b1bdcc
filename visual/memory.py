"""KV-cache memory against generation steps, one line per mode."""

from __future__ import annotations

import numpy as np

from pyramid_core.trace import MIB, StepRecord

from .records import as_runs
from .theme import empty_figure, figure, mode_color

TITLE = "KV cache memory (dashed: the peak so far)"
X_TITLE = "generated tokens (decode step; 0 = prefill)"
Y_TITLE = "KV cache (MiB)"
PREFILL_LABEL = "prefill"
PEAK_SUFFIX = " (peak)"
NO_RUNS = "No runs yet: generate to see KV memory."
PREFILL_MARKER_SIZE = 11


def kv_memory_figure(runs: dict[str, list[StepRecord]]) -> dict:
    """KV MiB (kv_bytes / 2**20) at each step, x = step, with the prefill point marked at x = 0.

    Each mode has a solid line of the current KV size and a dashed line, in the same colour and
    legend group, of the peak so far (named mode + PEAK_SUFFIX; out of the legend, which toggles the
    group: fourteen entries overran the title at 1280 px with seven modes, and the title says "dashed").
    """
    runs = as_runs(runs)
    if not runs:
        return empty_figure(NO_RUNS)
    traces = [trace for mode, run in runs.items() for trace in (_kv_trace(mode, run), _peak_trace(mode, run))]
    # the prefill line as a layout shape and its label (what add_vline makes, without its ~8 ms)
    # the legend under the axis title: seven modes' entries beside the title ran into it at 1280 px
    return figure(traces, TITLE, X_TITLE, Y_TITLE, margin=dict(b=120),
                  legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0.0),
                  shapes=[dict(type="line", x0=0, x1=0, xref="x", y0=0, y1=1, yref="paper",
                               line=dict(dash="dot", color="#999999"))],
                  annotations=[dict(text=PREFILL_LABEL, x=0, xref="x", y=1, yref="paper", xanchor="left",
                                    yanchor="top", showarrow=False)])


def _kv_trace(mode: str, run: list[StepRecord]) -> dict:
    return dict(
        type="scatter",
        x=np.array([r.step for r in run]),
        y=np.array([r.kv_bytes for r in run]) / MIB,
        customdata=np.array([r.peak_kv_bytes for r in run]) / MIB,
        name=mode,
        legendgroup=mode,
        mode="lines+markers",
        line=dict(color=mode_color(mode), width=2),
        # only the prefill point gets a visible marker
        marker=dict(size=np.array([PREFILL_MARKER_SIZE if r.phase == "prefill" else 0 for r in run]),
                    symbol="diamond"),
        hovertemplate=f"{mode}<br>step %{{x}}<br>KV %{{y:.2f}} MiB<br>peak %{{customdata:.2f}} MiB<extra></extra>",
    )


def _peak_trace(mode: str, run: list[StepRecord]) -> dict:
    return dict(
        type="scatter",
        x=np.array([r.step for r in run]),
        y=np.array([r.peak_kv_bytes for r in run]) / MIB,
        name=mode + PEAK_SUFFIX,
        legendgroup=mode,
        showlegend=False,
        mode="lines",
        line=dict(color=mode_color(mode), width=1, dash="dash"),
        opacity=0.6,
        hovertemplate=f"{mode} peak<br>step %{{x}}<br>%{{y:.2f}} MiB<extra></extra>",
    )
