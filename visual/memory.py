"""KV-cache memory against generation steps, one line per mode."""

from __future__ import annotations

import plotly.graph_objects as go

from pyramid_core.trace import StepRecord

from .records import as_runs
from .theme import empty_figure, mode_color, styled

MIB = 2**20
TITLE = "KV cache memory"
X_TITLE = "generated tokens (decode step; 0 = prefill)"
Y_TITLE = "KV cache (MiB)"
PREFILL_LABEL = "prefill"
PEAK_SUFFIX = " (peak)"
NO_RUNS = "No runs yet: generate to see KV memory."
PREFILL_MARKER_SIZE = 11


def kv_memory_figure(runs: dict[str, list[StepRecord]]) -> go.Figure:
    """KV MiB (kv_bytes / 2**20) at each step, x = step, with the prefill point marked at x = 0.

    Each mode has a solid line of the current KV size and a dashed line, in the same colour and
    legend group, of the peak so far (named mode + PEAK_SUFFIX).
    """
    runs = as_runs(runs)
    if not runs:
        return empty_figure(NO_RUNS)
    fig = styled(go.Figure(), TITLE, X_TITLE, Y_TITLE)
    for mode, run in runs.items():
        fig.add_trace(_kv_trace(mode, run))
        fig.add_trace(_peak_trace(mode, run))
    fig.add_vline(x=0, line_dash="dot", line_color="#999999", annotation_text=PREFILL_LABEL)
    return fig


def _kv_trace(mode: str, run: list[StepRecord]) -> go.Scatter:
    return go.Scatter(
        x=[r.step for r in run],
        y=[r.kv_bytes / MIB for r in run],
        customdata=[r.peak_kv_bytes / MIB for r in run],
        name=mode,
        legendgroup=mode,
        mode="lines+markers",
        line=dict(color=mode_color(mode), width=2),
        # only the prefill point gets a visible marker
        marker=dict(size=[PREFILL_MARKER_SIZE if r.phase == "prefill" else 0 for r in run],
                    symbol="diamond"),
        hovertemplate=f"{mode}<br>step %{{x}}<br>KV %{{y:.2f}} MiB<br>peak %{{customdata:.2f}} MiB<extra></extra>",
    )


def _peak_trace(mode: str, run: list[StepRecord]) -> go.Scatter:
    return go.Scatter(
        x=[r.step for r in run],
        y=[r.peak_kv_bytes / MIB for r in run],
        name=mode + PEAK_SUFFIX,
        legendgroup=mode,
        mode="lines",
        line=dict(color=mode_color(mode), width=1, dash="dash"),
        opacity=0.6,
        hovertemplate=f"{mode} peak<br>step %{{x}}<br>%{{y:.2f}} MiB<extra></extra>",
    )
