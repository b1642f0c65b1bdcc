"""What the live view sends (issue 18 part 8): on a GPU the updates of a 3000-token prompt over seven
modes arrived a second late, behind figures of ~0.5 MB each. Measured in bytes, the way Gradio sends
them: each figure as its postprocessed JSON, and a stream update as its diff against the one before."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
from gradio import utils

from pyramid_core.trace import LayerAttention, StepRecord
from studio.figures import MEAN_HEAD, STEP_CHOICES, run_figures
from studio.sent import as_sent, plot
from visual.theme import figure
from studio.live import Live
from studio.model_cache import get_model
from studio.modes import MODES

PROMPT_TOKENS, LAYERS, HEADS = 3000, 12, 6  # the long sample prompt on the embedded model
VIEW = {"mode": "pyramid", "step": STEP_CHOICES[0], "layer": 0, "head": MEAN_HEAD}


def record(step: int) -> StepRecord:
    """A step that holds every other position in each layer, with attention over them (the worst
    case for the figures: every column of every panel drawn)."""
    seen = PROMPT_TOKENS + step
    held = list(range(0, seen, 2))
    weights = [[1.0 / len(held)] * len(held) for _ in range(HEADS)]
    return StepRecord(step=step, phase="prefill" if step == 0 else "decode", token_ids=[7], finished=[False],
                      kept_tokens=[len(held)] * LAYERS, kept_tokens_per_row=[[len(held)] * LAYERS],
                      kv_bytes=1000 * seen, peak_kv_bytes=1000 * seen, step_time_s=0.01, seen_tokens=seen,
                      kept_positions=[held] * LAYERS,
                      attention=[LayerAttention(layer=i, positions=held, weights=weights) for i in range(LAYERS)])


def as_data(value):
    """A figure as Gradio serialises it (PlotData), any other value as it is."""
    return value.model_dump() if hasattr(value, "model_dump") else value


def sent_bytes(value) -> int:
    return len(json.dumps(as_data(value)))


def test_the_figures_of_a_long_prompt_over_seven_modes_stay_small():
    runs = {mode: [record(0), record(128)] for mode in MODES}
    kv, pyramid, grid, bars, table = (sent_bytes(v) for v in as_sent(run_figures(runs, VIEW)))
    assert pyramid < 40_000  # was ~490 kB: seven panels of 1000 float32 columns, for ~170 px each
    assert grid < 80_000 and bars < 20_000 and kv < 20_000 and table < 5_000
    assert kv + pyramid + grid + bars + table < 150_000


def plotly_json(fig: dict):
    """What Plotly itself sends of a figure dict (its go.Figure, unchecked like the studio's, and to_json)."""
    return json.loads(go.Figure(data=fig["data"], layout=fig["layout"], _validate=False).to_json())


ODD_ARRAYS = {"small ints": np.array([0, 5, -3]), "wide ints": np.array([-1, 70_000]), "huge ints": np.array([2**40]),
              "unsigned": np.array([3, 300], dtype=np.uint64), "grid": np.arange(6, dtype=np.float64).reshape(2, 3),
              "bools": np.array([True, False]), "empty": np.zeros(0), "nested list": [[1, 2], [3, 4]]}


@pytest.mark.parametrize("name", ["kv", "pyramid", "grid", "bars"])
def test_a_figure_goes_out_as_plotly_sends_it(name):
    runs = {mode: [record(0), record(128)] for mode in MODES}
    fig = dict(zip(["kv", "pyramid", "grid", "bars"], run_figures(runs, VIEW)))[name]
    assert json.loads(plot(fig).plot) == plotly_json(fig)


@pytest.mark.parametrize("name", ODD_ARRAYS)
def test_any_array_goes_out_as_plotly_sends_it(name):
    fig = figure([{"type": "scatter", "x": ODD_ARRAYS[name], "marker": {"size": ODD_ARRAYS[name]}}], name)
    assert json.loads(plot(fig).plot) == plotly_json(fig)
    assert fig["data"][0]["x"] is ODD_ARRAYS[name]  # the figure itself is left as it was


def test_a_text_update_carries_no_figure(checkpoint):
    """Between two figure refreshes an update resends the figures as they were: Gradio's diff of each is
    empty, so only the panes' text goes over the wire."""
    live = Live(get_model(str(checkpoint)), ["baseline"], dict(VIEW, mode="baseline"))
    live.add("baseline", record(0))
    first = live.outputs(final=True)  # figures drawn
    live.add("baseline", record(1))
    live.plots_at = float("inf")  # figures not due: this update is text
    second = live.outputs()
    figures = slice(2 * len(MODES), 2 * len(MODES) + 5)
    assert not live.plotted
    for before, after in zip(first[figures], second[figures]):
        assert utils.diff(as_data(before), as_data(after)) == []
