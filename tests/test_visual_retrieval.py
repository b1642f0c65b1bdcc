"""The retrieval figures (visual/retrieval.py) built from plain data, and their HTML and PNG export: no
model, no torch (tests/test_visual.py checks every visual/ file's imports)."""

import sys

import plotly.graph_objects as go
import pytest

import visual
from visual.retrieval import ACCURACY_TITLE, CURVE_TITLE, SHARE_TITLE

POINTS = [
    {"mode": "baseline", "budget": None, "kv_share": 1.0, "accuracy": {"single": 0.8}},
    {"mode": "streaming", "budget": 0.5, "kv_share": 0.5, "accuracy": {"single": 0.4}},
    {"mode": "streaming", "budget": 0.1, "kv_share": 0.1, "accuracy": {"single": 0.1}},
    {"mode": "pyramid", "budget": 0.1, "kv_share": None, "accuracy": {}},  # refused
    {"mode": "pyramid", "budget": 0.5, "kv_share": 0.62, "accuracy": {"single": 0.55}},
    {"mode": "recurformer", "budget": None, "kv_share": 0.75, "accuracy": {"single": 0.7}},
]
GRID = {"512": {"0": 0.25, "1": 1.0}, "1024": {"0": 0.0, "0.5": 0.5}}
RESULT = {"points": POINTS, "grids": {"pyramid+recurformer": {"budget": None, "kv_share": 0.6, "grid": GRID}}}


def checked(fig: dict) -> go.Figure:
    """The figure dict built with Plotly's property checks on: a misspelt property fails here."""
    return go.Figure(fig)


def test_curve_has_a_line_per_mode_sorted_by_share():
    fig = checked(visual.curve_figure(POINTS))
    named = {t.name: t for t in fig.data if t.showlegend is not False}
    assert list(named) == ["baseline", "streaming", "pyramid", "recurformer"]
    assert list(named["streaming"].x) == [0.1, 0.5] and list(named["streaming"].y) == [0.1, 0.4]
    assert list(named["pyramid"].x) == [0.62]  # the refused point is not drawn
    assert named["recurformer"].mode == "markers" and named["streaming"].mode == "lines+markers"
    level = [t for t in fig.data if t.showlegend is False]
    assert len(level) == 1 and list(level[0].y) == [0.8, 0.8]  # the baseline across
    assert fig.layout.title.text == CURVE_TITLE
    assert fig.layout.xaxis.title.text == SHARE_TITLE and fig.layout.yaxis.title.text == ACCURACY_TITLE


def test_needle_heatmap_places_each_cell():
    fig = checked(visual.needle_figure("pyramid", GRID, 0.62))
    heat = fig.data[0]
    assert list(heat.y) == ["512", "1024"] and list(heat.x) == ["0", "0.5", "1"]
    assert [list(r) for r in heat.z] == [[0.25, None, 1.0], [0.0, 0.5, None]]
    assert (heat.zmin, heat.zmax) == (0, 1) and "0.62" in fig.layout.title.text


def test_nothing_to_draw_gives_an_annotated_empty_figure():
    assert checked(visual.curve_figure([POINTS[3]])).layout.annotations[0].text == "no answered points"
    assert "no single-fact task" in checked(visual.needle_figure("m", {}, None)).layout.annotations[0].text


def test_malformed_data_raises():
    with pytest.raises(ValueError, match="needs"):
        visual.curve_figure([{"mode": "m", "kv_share": 0.5}])
    with pytest.raises(ValueError, match="needle grid"):
        visual.needle_figure("m", {"512": 0.5}, 0.5)
    with pytest.raises(ValueError, match="points"):
        visual.retrieval_figures({"points": []})


def test_figure_names_are_file_safe_and_html_stays_small(tmp_path):
    figs = visual.retrieval_figures(RESULT)
    assert list(figs) == ["retrieval_curve", "needle_pyramid_recurformer"]
    paths = visual.figures_to_files(figs, tmp_path, plotlyjs="cdn")
    assert all(p.stat().st_size < 50_000 for p in paths)  # plotly.js itself is not embedded
    assert "cdn.plot.ly" in paths[0].read_text()


def test_png_without_kaleido_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido now raises ImportError
    with pytest.raises(ModuleNotFoundError, match="pip install 'kaleido"):
        visual.figures_to_png(visual.retrieval_figures(RESULT), tmp_path)

