"""The generate event's outputs in the form Gradio sends them, made on the handler's thread.

Gradio runs each output's `postprocess` on a worker thread of its own, one hand-off there and back per
output: ~25 a streamed update here (7 panes, 7 stats lines, 4 plots, the table, ...). On a GPU the torch
thread holds the GIL almost all the time (it only launches kernels), and each of those hand-offs waits
for it: updates built during a 1 s run reached the client 0.9-1.3 s late (benchmarks/app_gpu.md). So
the event runs with postprocess=False, and Live (studio/live.py) hands Gradio each value already as the
component's own postprocess makes it, by calling that postprocess here (tests/test_app.py checks
that Gradio would send the same).
"""

from __future__ import annotations

import base64

import gradio as gr
import numpy as np
import plotly.io as pio
# the numpy dtypes plotly.js reads from base64 (its typed arrays), Plotly's own table. Its conversion,
# to_typed_array_spec, first copies every array through narwhals: 2.7x this module's time for the studio's figures
from _plotly_utils.utils import plotlyjsShortTypes as TYPED
from gradio.components.plot import PlotData

import visual

TABLE_HEADERS = [h for _, h in visual.COLUMNS]
# Unrendered twins of the page's output components: their postprocess is what Gradio would run
SENT_TABLE = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, render=False)
SENT_STATS = gr.Markdown(render=False)
SENT_CODE = gr.Code(render=False)


def is_update(value) -> bool:
    """gr.skip() and gr.update(...): Gradio handles those itself, postprocess or not."""
    return isinstance(value, dict) and value.get("__type__") == "update"


def sent(component: gr.components.Component, value):
    return value if is_update(value) else component.postprocess(value)


def plot(fig: dict) -> PlotData:
    """A figure dict (visual/theme.py) as gr.Plot sends a Plotly figure, for gr.Plot's value or any
    output (its postprocess passes a PlotData through): the same JSON that go.Figure(fig).to_json() makes
    (tests/test_payload.py), in a tenth of the time, since nothing is copied or checked on the way."""
    return PlotData(type="plotly", plot=pio.to_json(typed_arrays(fig), validate=False))


SMALLER = {"i": (np.int8, np.int16, np.int32), "u": (np.uint8, np.uint16, np.uint32)}


def typed_arrays(tree):
    """A copy of a figure dict with every numpy array as plotly.js's typed array ({dtype, bdata, shape}),
    as Plotly sends them: a third of the bytes of their numbers as text. 64-bit integers, which plotly.js
    cannot read, become the smallest integers of their sign that hold them, as Plotly makes them. A list
    whose first item is a number or a string is taken as it is: a figure's lists hold one kind of item."""
    if isinstance(tree, dict):
        return {k: typed_arrays(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        nested = tree and isinstance(tree[0], (dict, list, tuple, np.ndarray))
        return [typed_arrays(v) for v in tree] if nested else tree
    if not isinstance(tree, np.ndarray) or tree.size == 0:
        return tree
    if tree.dtype.kind in "iu" and tree.dtype.itemsize == 8:
        fits = [t for t in SMALLER[tree.dtype.kind] if np.iinfo(t).min <= tree.min() and tree.max() <= np.iinfo(t).max]
        tree = tree.astype(fits[0]) if fits else tree
    if str(tree.dtype) not in TYPED:
        return tree.tolist()
    spec = {"dtype": TYPED[str(tree.dtype)], "bdata": base64.b64encode(np.ascontiguousarray(tree)).decode("ascii")}
    if tree.ndim > 1:
        spec["shape"] = ", ".join(str(n) for n in tree.shape)
    return spec


def as_sent(figures: list) -> list:
    """run_figures' four plots and its table as Gradio sends them. The pane updates between two figure
    refreshes send them again, which adds nothing to the stream (its diff of an unchanged value is
    empty), where a gr.skip() costs ~0.7 ms (Gradio 6 rebuilds the component; 2-core CPU)."""
    *plots, table = figures
    return [plot(f) for f in plots] + [sent(SENT_TABLE, table)]
