"""visual/: figures and table rows built from hand-made trace records (no model, no torch).

Each test reads values back out of the figure and compares them with the records it was built from.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

import visual
from pyramid_core.trace import LayerAttention, RecencyReport, StepRecord
from visual import (
    MAX_COLUMNS,
    TEMPLATE,
    figures_to_files,
    mode_color,
    records_from_json,
    records_to_json,
    summary_rows,
    summary_table_markdown,
)
from visual.theme import figure
from visual.memory import PEAK_SUFFIX, PREFILL_LABEL, X_TITLE, Y_TITLE
from visual.recency import REPLACED_NAME

VISUAL_DIR = Path(visual.__file__).parent  # the visual/ under test, in a checkout or installed


def checked(build):
    """A figure function whose figure dicts come back as go.Figure, built with Plotly's property checks
    on: a misspelt or misplaced property raises, and the tests read each figure as Plotly reads it."""
    return lambda *args, **kwargs: go.Figure(build(*args, **kwargs))


attention_figure, attention_grid_figure, empty_figure, kept_tokens_figure, kv_memory_figure, pyramid_figure, \
    recency_figure = map(checked, (visual.attention_figure, visual.attention_grid_figure, visual.empty_figure,
                                   visual.kept_tokens_figure, visual.kv_memory_figure, visual.pyramid_figure,
                                   visual.recency_figure))


# ---------------------------------------------------------------------------- record builders

def make_record(step, kept_tokens, kv_bytes, *, token=7, peak=None, time_s=0.01, seen=None,
                kept_positions=None, attention=None, finished=False, batch=1):
    """A StepRecord with consistent per-row fields; every row gets the same kept_tokens and token."""
    return StepRecord(
        step=step,
        phase="prefill" if step == 0 else "decode",
        token_ids=[token] * batch,
        finished=[finished] * batch if isinstance(finished, bool) else list(finished),
        kept_tokens=list(kept_tokens),
        kept_tokens_per_row=[list(kept_tokens) for _ in range(batch)],
        kv_bytes=kv_bytes,
        peak_kv_bytes=kv_bytes if peak is None else peak,
        step_time_s=time_s,
        seen_tokens=10 + step if seen is None else seen,
        kept_positions=kept_positions,
        attention=attention,
    )


def make_run(kv_bytes, tokens=None, times=None, kept_tokens=(3, 2)):
    """One run: prefill then decodes, peak = running max of kv_bytes."""
    tokens = tokens or [7] * len(kv_bytes)
    times = times or [0.01] * len(kv_bytes)
    peaks = [max(kv_bytes[:i + 1]) for i in range(len(kv_bytes))]
    return [make_record(s, kept_tokens, kv, token=t, peak=p, time_s=dt)
            for s, (kv, t, p, dt) in enumerate(zip(kv_bytes, tokens, peaks, times))]


def assert_empty_figure(fig):
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert len(fig.layout.annotations) == 1 and fig.layout.annotations[0].text


# ---------------------------------------------------------------------------- boundaries and theme

# numpy: heatmap data as arrays (Plotly checks a nested list element by element); kaleido: plotly's optional
# PNG engine (export.figures_to_png); never torch or models
ALLOWED_IMPORTS = {"plotly", "numpy", "kaleido", "pyramid_core.trace", "__future__", "math", "json", "re", "zlib",
                   "weakref", "dataclasses", "pathlib", "html"}


@pytest.mark.parametrize("path", sorted(VISUAL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_visual_imports_only_plotly_trace_and_stdlib(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name in ALLOWED_IMPORTS or name.split(".")[0] == "plotly", f"{path.name} imports {name}"


def every_figure() -> dict[str, dict]:
    """One output of every figure function, each with all its traces and layout features, as it made it."""
    run = make_run([100, 200])
    run[0] = replace(run[0], kept_positions=[[0, 1, 2], [0, 2]])
    att = attention_record([0, 1, 4], [[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    report = RecencyReport(window=4, sink_len=1, scores=[[0.2, 0.9], [0.5, 0.1]], sink_mass=[[0.1, 0.0]] * 2,
                           heads_per_group=1, replaced=[[1, 0]])
    return {"memory": visual.kv_memory_figure({"pyramid": run}),
            "pyramid": visual.pyramid_figure({"pyramid": run, "baseline": run}),
            "kept": visual.kept_tokens_figure({"pyramid": run}), "attention": visual.attention_figure(att, 1, 0),
            "grid": visual.attention_grid_figure(att), "recency": visual.recency_figure(report),
            "empty": visual.empty_figure("nothing")}


@pytest.mark.parametrize("name", ["memory", "pyramid", "kept", "attention", "grid", "recency", "empty"])
def test_every_figure_is_valid_plotly_in_the_one_template(name):
    # figure dicts are made without Plotly's property checks (theme.figure); built with them on, a
    # misspelt property raises, and one Plotly would have moved or coerced (a nested "title_text")
    # comes out different (named colour scales, which the checks expand into lists, aside)
    fig = every_figure()[name]
    assert fig["layout"]["template"] is TEMPLATE
    assert without_colorscales(json.loads(go.Figure(fig).to_json())) == without_colorscales(as_sent_unchecked(fig))


def as_sent_unchecked(fig: dict):
    """The JSON Plotly makes of a figure dict when nothing is checked."""
    return json.loads(go.Figure(data=fig["data"], layout=fig["layout"], _validate=False).to_json())


def without_colorscales(tree):
    if isinstance(tree, dict):
        return {k: without_colorscales(v) for k, v in tree.items() if k != "colorscale"}
    return [without_colorscales(v) for v in tree] if isinstance(tree, list) else tree


@pytest.mark.parametrize("trace, layout", [
    (dict(type="scatter", x=[1], line=dict(colour="red")), {}),
    (dict(type="bar", x=[1]), dict(xaxis=dict(title_text="a nested path Plotly expands only when checking"))),
], ids=["misspelt", "nested-path"])
def test_the_plotly_check_catches_what_unchecked_figures_let_through(trace, layout):
    fig = figure([trace], "t", **layout)  # accepted as is
    with contextlib.suppress(ValueError):
        assert json.loads(go.Figure(fig).to_json()) != as_sent_unchecked(fig)


def test_mode_colors_are_fixed_for_known_modes_and_stable_for_others():
    known = [mode_color(m) for m in ("baseline", "pyramid", "streaming", "recurformer", "pyramid+recurformer")]
    assert len(set(known)) == 5
    assert mode_color("my-new-mode") == mode_color("my-new-mode")
    assert mode_color("my-new-mode").startswith("#")


# ---------------------------------------------------------------------------- memory

def test_memory_figure_plots_mib_per_step_with_peak_and_prefill_mark():
    runs = {"baseline": make_run([2**20, 3 * 2**20, 4 * 2**20]),
            "pyramid": make_run([2**19, 2**20, 2**19, 2**20])}
    fig = kv_memory_figure(runs)
    assert fig.layout.xaxis.title.text == X_TITLE and fig.layout.yaxis.title.text == Y_TITLE
    for mode, run in runs.items():
        (line,) = [t for t in fig.data if t.name == mode]
        (peak,) = [t for t in fig.data if t.name == mode + PEAK_SUFFIX]
        assert list(line.x) == [r.step for r in run]
        assert list(line.y) == pytest.approx([r.kv_bytes / 2**20 for r in run])
        assert list(peak.y) == pytest.approx([r.peak_kv_bytes / 2**20 for r in run])
        assert peak.line.dash == "dash" and peak.line.color == line.line.color == mode_color(mode)
        sizes = list(line.marker.size)
        assert sizes[0] > 0 and all(s == 0 for s in sizes[1:])  # only the prefill is marked
    assert len(fig.data) == 2 * len(runs)
    assert [a.text for a in fig.layout.annotations] == [PREFILL_LABEL]
    assert fig.layout.annotations[0].x == 0


def test_memory_peak_line_differs_from_current_after_compression():
    fig = kv_memory_figure({"pyramid": make_run([400, 800, 300])})
    (peak,) = [t for t in fig.data if t.name.endswith(PEAK_SUFFIX)]
    assert list(peak.y) == pytest.approx([400 / 2**20, 800 / 2**20, 800 / 2**20])


def test_memory_figure_accepts_dicts_and_gives_same_values():
    run = make_run([100, 300])
    a = kv_memory_figure({"pyramid": run})
    b = kv_memory_figure({"pyramid": [r.to_dict() for r in run]})
    assert list(a.data[0].y) == list(b.data[0].y)


@pytest.mark.parametrize("runs", [{}, {"pyramid": []}], ids=["no-modes", "empty-run"])
def test_memory_figure_empty_input_gives_annotated_empty_figure(runs):
    assert_empty_figure(kv_memory_figure(runs))


# ---------------------------------------------------------------------------- pyramid

def test_pyramid_heatmap_is_one_exactly_at_held_positions():
    positions = {"pyramid": [[0, 1, 2, 5, 9], [0, 5, 9], [0, 9]], "streaming": [[0, 7, 8], [0, 7, 8], [0, 7, 8]]}
    runs = {}
    for mode, held in positions.items():
        run = make_run([100, 100, 100], kept_tokens=[len(p) for p in held])
        run[0] = replace(run[0], kept_positions=[[0, 1], [0], [0]],  # older, must be ignored
                         kept_tokens=[2, 1, 1], kept_tokens_per_row=[[2, 1, 1], *run[0].kept_tokens_per_row[1:]])
        run[1] = replace(run[1], kept_positions=held)  # latest with positions; run[2] has none
        runs[mode] = run
    fig = pyramid_figure(runs)
    assert len(fig.data) == 2
    for trace, (mode, held) in zip(fig.data, positions.items()):
        assert trace.name == mode
        width = len(trace.x)
        assert list(trace.x) == list(range(width))
        assert width == 11  # step 1 has seen 11 tokens (positions 0..10), beyond the widest held position 9
        for layer, row in enumerate(trace.z):
            assert [i for i, v in enumerate(row) if v == 100] == held[layer]  # percent held
            assert all(v in (0, 100) for v in row)


def test_pyramid_heatmap_bins_long_contexts_to_fraction_held():
    width = 3 * MAX_COLUMNS
    held = [list(range(0, width, 2)), [0]]
    run = [make_record(0, [len(h) for h in held], 10, seen=width, kept_positions=held)]
    (trace,) = pyramid_figure({"pyramid": run}).data
    size = trace.x[1] - trace.x[0]
    assert len(trace.x) <= MAX_COLUMNS and size == 3
    assert trace.z[0][5] == 33  # positions 15, 16, 17: only 16 held, in whole percents
    assert sum(trace.z[1]) * size == 99  # layer 1 holds one position: 33% of its bin


def test_pyramid_panels_share_the_columns():
    """Seven panels side by side get a seventh of a full-width figure's columns each: more is not seen."""
    width = 3000
    run = [make_record(0, [width], 10, seen=width, kept_positions=[list(range(width))])]
    fig = pyramid_figure({f"mode{i}": run for i in range(7)})
    assert len(fig.data) == 7
    assert sum(len(t.x) for t in fig.data) <= MAX_COLUMNS
    assert all(set(np.ravel(t.z)) == {100} for t in fig.data)  # every bin wholly held


def test_heatmaps_go_out_as_compact_typed_arrays():
    """Plotly sends a numpy array as base64 of its dtype, and the live view resends these figures every
    second or two: a byte a cell for the percentage held, four for weights."""
    def z_dtype(fig):
        return json.loads(fig.to_json())["data"][0]["z"]["dtype"]

    short = [make_record(0, [2, 1], 10, seen=3, kept_positions=[[0, 2], [1]])]
    binned = [make_record(0, [1, 1], 10, seen=3 * MAX_COLUMNS, kept_positions=[[0], [5]])]
    att = [LayerAttention(layer=0, positions=[0, 1], weights=[[0.5, 0.5]])]
    assert z_dtype(pyramid_figure({"pyramid": short})) == "u1"
    assert z_dtype(pyramid_figure({"pyramid": binned})) == "u1"
    assert z_dtype(attention_grid_figure(make_record(1, [2], 10, attention=att))) == "f4"


def test_pyramid_figure_rejects_a_run_without_kept_positions():
    with pytest.raises(ValueError, match="kept_positions"):
        pyramid_figure({"pyramid": make_run([1, 2])})


def test_kept_tokens_figure_shows_last_step_per_layer():
    runs = {"baseline": make_run([1, 2], kept_tokens=(10, 10, 10)),
            "pyramid": make_run([1, 2, 3], kept_tokens=(10, 6, 3))}
    last = runs["pyramid"][-1]
    runs["pyramid"][-1] = replace(last, kept_tokens=[9, 5, 2], kept_tokens_per_row=[[9, 5, 2], *last.kept_tokens_per_row[1:]])
    fig = kept_tokens_figure(runs)
    assert [t.name for t in fig.data] == ["baseline", "pyramid"]
    assert list(fig.data[1].x) == [9, 5, 2] and list(fig.data[1].y) == [0, 1, 2]
    assert list(fig.data[0].x) == [10, 10, 10]


# ---------------------------------------------------------------------------- attention

def attention_record(positions, weights, layer=1, layers=3):
    att = [LayerAttention(layer=layer, positions=positions, weights=weights)]
    return make_record(5, [len(positions)] * layers, 100, attention=att)


def test_attention_figure_bars_at_held_positions_for_one_head():
    positions = [0, 1, 4, 9]
    weights = [[0.4, 0.1, 0.2, 0.3], [0.1, 0.1, 0.1, 0.7]]
    (bar,) = attention_figure(attention_record(positions, weights), layer=1, head=1).data
    assert list(bar.x) == positions
    assert list(bar.y) == pytest.approx(weights[1])


def test_attention_figure_head_none_is_the_mean_over_heads():
    positions = [0, 3, 8]
    weights = [[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    (bar,) = attention_figure(attention_record(positions, weights), layer=1, head=None).data
    expected = [(0.5 + 0.1 + 0.3) / 3, (0.25 + 0.1 + 0.3) / 3, (0.25 + 0.8 + 0.4) / 3]
    assert list(bar.x) == positions
    assert list(bar.y) == pytest.approx(expected)


def test_attention_binning_caps_columns_and_preserves_mass():
    positions = list(range(0, 5000, 2)) + [5001]  # 2501 held positions with a gap pattern
    n = len(positions)
    weights = [[(j % 7 + 1) / 1000 for j in range(n)]]
    (bar,) = attention_figure(attention_record(positions, weights), layer=1, head=0).data
    assert len(bar.x) <= MAX_COLUMNS
    assert sum(bar.y) == pytest.approx(sum(weights[0]))
    size = bar.x[1] - bar.x[0]
    first_bin = sum(w for p, w in zip(positions, weights[0]) if p < size)
    assert bar.y[0] == pytest.approx(first_bin)


def test_attention_grid_rows_are_layers_with_zeros_where_not_held():
    att = [LayerAttention(layer=0, positions=[0, 1, 2, 3], weights=[[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]),
           LayerAttention(layer=2, positions=[0, 3], weights=[[0.5, 0.5], [0.9, 0.1]])]
    record = make_record(3, [4, 4, 2], 100, attention=att)
    (heat,) = attention_grid_figure(record).data
    assert list(heat.y) == [0, 2] and list(heat.x) == [0, 1, 2, 3]
    assert [list(r) for r in heat.z] == [pytest.approx([0.25, 0.25, 0.25, 0.25]), pytest.approx([0.7, 0, 0, 0.3])]
    (heat1,) = attention_grid_figure(record, head=1).data
    assert list(heat1.z[1]) == pytest.approx([0.9, 0, 0, 0.1])


def test_attention_grid_binning_preserves_each_layers_mass():
    positions = list(range(3 * MAX_COLUMNS + 17))
    weights = [[1 / len(positions)] * len(positions)]
    att = [LayerAttention(layer=0, positions=positions, weights=weights)]
    (heat,) = attention_grid_figure(make_record(1, [len(positions)], 10, attention=att)).data
    assert len(heat.x) <= MAX_COLUMNS
    assert np.sum(heat.z[0], dtype=np.float64) == pytest.approx(1.0)  # cells are float32: add them in float64


def test_attention_figure_without_recorded_attention_is_empty():
    assert_empty_figure(attention_figure(make_record(2, [3], 10), layer=0, head=None))
    assert_empty_figure(attention_grid_figure(make_record(2, [3], 10)))


@pytest.mark.parametrize("layer, head", [(0, None), (1, 2), (1, -1), (1, True)],
                         ids=["layer-not-recorded", "head-too-big", "head-negative", "head-bool"])
def test_attention_figure_rejects_bad_layer_or_head(layer, head):
    record = attention_record([0, 1], [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError):
        attention_figure(record, layer=layer, head=head)


# ---------------------------------------------------------------------------- recency

def test_recency_figure_marks_exactly_the_heads_of_replaced_groups():
    scores = [[0.1 * ((l + h) % 10) for h in range(8)] for l in range(4)]
    report = RecencyReport(window=16, sink_len=4, scores=scores, sink_mass=[[0.0] * 8 for _ in range(4)],
                           heads_per_group=2, replaced=[[1, 0], [3, 2]])
    fig = recency_figure(report)
    heat, marks = fig.data
    assert [list(r) for r in heat.z] == scores and heat.zmin == 0 and heat.zmax == 1
    assert marks.name == REPLACED_NAME and marks.marker.symbol == "x"
    assert sorted(zip(marks.y, marks.x)) == [(1, 0), (1, 1), (3, 4), (3, 5)]
    # the marks' key: Plotly hides a legend of one entry unless told (issue 18: the x marks had no key)
    assert fig.layout.showlegend is True and marks.showlegend is not False


def test_recency_figure_without_replaced_groups_has_no_marks_and_accepts_dicts():
    report = RecencyReport(window=4, sink_len=1, scores=[[0.2, 0.9]], sink_mass=[[0.1, 0.0]], heads_per_group=1)
    fig = recency_figure(report.to_dict())
    assert len(fig.data) == 1 and list(fig.data[0].customdata[0]) == [0.1, 0.0]
    assert not fig.layout.showlegend  # nothing to key but the colour bar


def test_recency_figure_empty_scores_gives_empty_figure():
    assert_empty_figure(recency_figure(RecencyReport(window=4, sink_len=1, scores=[], sink_mass=[],
                                                     heads_per_group=2)))


@pytest.mark.parametrize("change", [
    dict(scores=[[0.5, 1.5]]),
    dict(scores=[[0.5, 0.5], [0.5]], sink_mass=[[0, 0], [0]]),
    dict(replaced=[[0, 1]]),
    dict(replaced=[[2, 0]]),
    dict(heads_per_group=0),
], ids=["score-above-1", "ragged", "group-out-of-range", "layer-out-of-range", "zero-group"])
def test_recency_figure_rejects_malformed_reports(change):
    data = dict(window=4, sink_len=1, scores=[[0.5, 0.5]], sink_mass=[[0.0, 0.0]], heads_per_group=2, replaced=[])
    with pytest.raises(ValueError):
        recency_figure({**data, **change})


# ---------------------------------------------------------------------------- summary

def test_summary_rows_match_hand_computed_values():
    base = make_run([1000, 2000, 3000, 4000], tokens=[5, 6, 7, 8], times=[0.5, 0.1, 0.1, 0.2])
    pyr = make_run([500, 900, 700, 1000], tokens=[5, 6, 9, 8], times=[0.4, 0.1, 0.3, 0.1])
    rows = summary_rows({"baseline": base, "pyramid": pyr})
    b, p = rows
    assert b["mode"] == "baseline" and b["agreement"] == 1.0 and b["first_divergence"] is None
    assert b["kv_pct_of_baseline"] == pytest.approx(100.0)
    assert p["mode"] == "pyramid"
    assert p["prompt_tokens"] == 10 and p["generated_tokens"] == 4
    assert p["final_kv_mib"] == pytest.approx(1000 / 2**20)
    assert p["peak_kv_mib"] == pytest.approx(1000 / 2**20)
    assert p["kv_pct_of_baseline"] == pytest.approx(25.0)
    assert p["tokens_per_s"] == pytest.approx(3 / 0.5)
    assert b["tokens_per_s"] == pytest.approx(3 / 0.4)
    assert p["prefill_s"] == pytest.approx(0.4)
    assert p["agreement"] == pytest.approx(3 / 4)
    assert p["first_divergence"] == 2


def test_summary_stops_counting_at_finish_and_compares_over_common_length():
    base = make_run([10, 20, 30, 40], tokens=[1, 2, 3, 4])
    short = make_run([10, 20, 30, 30], tokens=[1, 2, 0, 0])
    short[2] = replace(short[2], finished=[True])  # EOS at step 2; step 3's token is filler
    short[3] = replace(short[3], finished=[True])
    (row,) = [r for r in summary_rows({"baseline": base, "streaming": short}) if r["mode"] == "streaming"]
    assert row["generated_tokens"] == 3
    assert row["agreement"] == pytest.approx(2 / 3)
    assert row["first_divergence"] == 2
    assert row["tokens_per_s"] == pytest.approx(2 / 0.03)  # steps 1 and 2 count, step 3 is after the finish


def test_summary_counts_every_running_sequence_for_tokens_per_s():
    run = [make_record(0, [2], 10, batch=2),
           make_record(1, [2], 10, batch=2, finished=[False, True], time_s=0.5),
           make_record(2, [2], 10, batch=2, finished=[True, True], time_s=0.5)]
    (row,) = summary_rows({"pyramid": run})
    assert row["tokens_per_s"] == pytest.approx(3 / 1.0)  # 2 tokens at step 1, 1 at step 2


def test_summary_without_baseline_leaves_comparisons_empty():
    (row,) = summary_rows({"pyramid": make_run([10, 20])})
    assert row["kv_pct_of_baseline"] is None and row["agreement"] is None and row["first_divergence"] is None
    assert summary_rows({"pyramid": make_run([10])})[0]["tokens_per_s"] is None  # prefill only


def test_summary_table_markdown_has_a_row_per_mode_in_column_order():
    rows = summary_rows({"baseline": make_run([2**20, 2**21]), "pyramid": make_run([2**19, 2**20])})
    lines = summary_table_markdown(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| mode | prompt tokens |")
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[0] == "pyramid" and cells[3] == "1.00" and cells[5] == "50.0%" and cells[11] == "100.0%"
    assert cells[6] == "–" and cells[12] == "–"  # no KV budget was asked; no divergence
    assert cells[10] == "0.00"  # no step did one-time work
    with pytest.raises(ValueError):
        summary_table_markdown([{"mode": "x"}])


# ---------------------------------------------------------------------------- malformed records

def _good():
    return make_record(1, [3, 2], 100, kept_positions=[[0, 1, 2], [0, 2]],
                       attention=[LayerAttention(layer=0, positions=[0, 1, 2], weights=[[0.2, 0.3, 0.5]])]).to_dict()


@pytest.mark.parametrize("change", [
    dict(phase="sample"),
    dict(step=0),  # step 0 must be the prefill
    dict(kv_bytes=-1),
    dict(peak_kv_bytes=50),  # below kv_bytes
    dict(kept_tokens_per_row=[[3]]),
    dict(finished=[]),
    dict(kept_positions=[[0, 1, 2]]),  # one layer missing
    dict(kept_positions=[[0, 1, 1], [0, 2]]),  # duplicate
    dict(kept_positions=[[0, 1], [0, 2]]),  # disagrees with kept_tokens
    dict(attention=[dict(layer=0, positions=[0, 1], weights=[[0.5]], num_queries=1)]),
    dict(attention=[dict(layer=5, positions=[0], weights=[[1.0]], num_queries=1)]),
    dict(attention=[dict(layer=0, positions=[0, 1], weights=[[0.5, float("nan")]], num_queries=1)]),
    dict(kept_positions=[[0, 1, 2.0], [0, 2]]),  # a float position
    dict(step_time_s=float("nan")),
    dict(bogus=1),
], ids=lambda c: next(iter(c)))
def test_malformed_records_raise_value_error(change):
    good = _good()
    runs = {"pyramid": [make_record(0, [3, 2], 100).to_dict(), good]}
    kv_memory_figure(runs)  # the unchanged record is fine
    bad = {**good, **change}
    with pytest.raises(ValueError):
        kv_memory_figure({"pyramid": [runs["pyramid"][0], bad]})


def test_missing_field_and_bad_run_order_raise_value_error():
    good = _good()
    del good["kv_bytes"]
    with pytest.raises(ValueError, match="kv_bytes"):
        summary_rows({"pyramid": [make_record(0, [3, 2], 1), good]})
    with pytest.raises(ValueError, match="prefill"):
        kv_memory_figure({"pyramid": [make_record(1, [3, 2], 1)]})
    with pytest.raises(ValueError, match="increase"):
        kv_memory_figure({"pyramid": [make_record(0, [3, 2], 1), make_record(2, [3, 2], 1), make_record(1, [3, 2], 1)]})
    with pytest.raises(ValueError):
        kv_memory_figure([make_record(0, [3, 2], 1)])  # not a dict of runs


# ---------------------------------------------------------------------------- export

def test_figures_to_files_writes_standalone_html(tmp_path):
    figs = {"memory": kv_memory_figure({"pyramid": make_run([10, 20])}), "empty": empty_figure("none")}
    paths = figures_to_files(figs, tmp_path / "out")
    assert [p.name for p in paths] == ["memory.html", "empty.html"]
    html = paths[0].read_text()
    assert "<html>" in html and '<script src="http' not in html and len(html) > 1_000_000  # plotly.js embedded
    with pytest.raises(ValueError):
        figures_to_files({"../escape": figs["memory"]}, tmp_path)


def test_records_json_round_trip():
    run = make_run([10, 20])
    run[0] = replace(run[0], kept_positions=[[0, 1, 2], [0, 2]])
    run[1] = replace(run[1], attention=[LayerAttention(layer=1, positions=[0, 2], weights=[[0.25, 0.75]])])
    text = records_to_json({"pyramid": run})
    assert json.loads(text)["pyramid"][1]["attention"][0]["weights"] == [[0.25, 0.75]]
    back = records_from_json(text)
    assert back == {"pyramid": run}
    assert math.isclose(attention_figure(back["pyramid"][1], layer=1).data[0].y[1], 0.75)
