"""Attention of the current token over the original positions a layer holds.

x is always the original position, so tokens dropped by compression show up as gaps. When there
are more than MAX_COLUMNS columns, consecutive positions are binned by summing their weights
(see binning.py): the total mass, and the mass of every bin's range, is preserved.
"""

from __future__ import annotations

import numpy as np

from pyramid_core.trace import LayerAttention, StepRecord

from .binning import MAX_COLUMNS, bin_size, bin_starts, binned_sum, dense_row
from .records import as_record
from .theme import ATTENTION_COLOR, HEATMAP_COLORSCALE, empty_figure, figure

POSITION_TITLE = "original token position"
WEIGHT_TITLE = "attention weight"
LAYER_TITLE = "layer"
HEAD_MEAN_LABEL = "mean over heads"
NO_ATTENTION = "Step {step} recorded no attention: turn on attention recording to see it."


def attention_figure(record: StepRecord, layer: int, head: int | None = None) -> dict:
    """Bars of one layer's attention (one head, or the mean over heads when head is None) at x = held positions.

    Binned to at most MAX_COLUMNS bars (sum per bin, x = the bin's first position) when the
    layer holds more positions than that; only bins that contain a held position are drawn.
    """
    record = as_record(record)
    if not record.attention:
        return empty_figure(NO_ATTENTION.format(step=record.step))
    la = layer_attention(record, layer)
    x, y = _bars(la.positions, head_row(la, head))
    # typed arrays go out as base64 of their dtype: positions fit int32, weights are shown to 4 places
    bars = dict(type="bar", x=np.asarray(x, dtype=np.int32), y=np.asarray(y, dtype=np.float32),
                marker=dict(color=ATTENTION_COLOR),
                hovertemplate="position %{x}<br>weight %{y:.4f}<extra></extra>")
    title = f"{_who(record, la)} in layer {layer}, {_head_label(head)}"
    return figure([bars], title, POSITION_TITLE, WEIGHT_TITLE, bargap=0)


def attention_grid_figure(record: StepRecord, head: int | None = None) -> dict:
    """Every recorded layer (y) x original position (x): each row is that layer's attention, 0 where it holds nothing.

    Columns are bins of consecutive positions (weights summed) when positions exceed MAX_COLUMNS.
    """
    record = as_record(record)
    if not record.attention:
        return empty_figure(NO_ATTENTION.format(step=record.step))
    layers = sorted(record.attention, key=lambda a: a.layer)
    width = max(1, *(max(a.positions, default=-1) + 1 for a in layers))
    size = bin_size(width)
    z = np.stack([binned_sum(dense_row(a.positions, head_row(a, head), width), size) for a in layers])
    z = z.astype(np.float32)  # sent as base64 of the dtype: half the bytes of float64, the precision shown
    grid = dict(type="heatmap", z=z, x=bin_starts(width, size), y=[a.layer for a in layers], zmin=0,
                colorscale=HEATMAP_COLORSCALE, colorbar=dict(title=dict(text=WEIGHT_TITLE)),
                hovertemplate="layer %{y}, position %{x}<br>weight %{z:.4f}<extra></extra>")
    title = f"{_who(record, layers[0])}, every layer, {_head_label(head)}"
    return figure([grid], title, POSITION_TITLE, LAYER_TITLE)


def layer_attention(record: StepRecord, layer: int) -> LayerAttention:
    """The record's attention entry for `layer`; ValueError when that layer was not recorded."""
    for la in record.attention:
        if la.layer == layer:
            return la
    recorded = sorted(a.layer for a in record.attention)
    raise ValueError(f"step {record.step} has no attention for layer {layer!r}; recorded layers: {recorded}")


def head_row(la: LayerAttention, head: int | None) -> np.ndarray:
    """weights[head], or the mean over heads when head is None; ValueError for a head out of range."""
    if head is None:  # numpy's mean: a Python one over every column took ~20 ms of a final update (3k tokens)
        return np.asarray(la.weights, dtype=np.float64).mean(axis=0) if la.positions else np.zeros(0)
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < len(la.weights):
        raise ValueError(f"head must be None or an int in [0, {len(la.weights)}), got {head!r}")
    return np.asarray(la.weights[head], dtype=np.float64)


def _bars(positions: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    if len(positions) <= MAX_COLUMNS:
        return list(positions), weights
    width = max(positions) + 1
    size = bin_size(width)
    sums = binned_sum(dense_row(positions, weights, width), size)
    occupied = sorted({p // size for p in positions})
    return [i * size for i in occupied], [float(sums[i]) for i in occupied]


def _who(record: StepRecord, la: LayerAttention) -> str:
    if record.phase == "prefill":
        return f"Attention of the last {la.num_queries} prompt tokens"
    return f"Attention of the token at step {record.step}"


def _head_label(head: int | None) -> str:
    return HEAD_MEAN_LABEL if head is None else f"head {head}"
