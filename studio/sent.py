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

import gradio as gr

import visual

TABLE_HEADERS = [h for _, h in visual.COLUMNS]
# Unrendered twins of the page's output components: their postprocess is what Gradio would run
SENT_PLOT = gr.Plot(render=False)  # a PlotData passes through it unchanged
SENT_TABLE = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, render=False)
SENT_STATS = gr.Markdown(render=False)
SENT_CODE = gr.Code(render=False)


def is_update(value) -> bool:
    """gr.skip() and gr.update(...): Gradio handles those itself, postprocess or not."""
    return isinstance(value, dict) and value.get("__type__") == "update"


def sent(component: gr.components.Component, value):
    return value if is_update(value) else component.postprocess(value)


def as_sent(figures: list) -> list:
    """run_figures' four plots and its table as Gradio sends them. The pane updates between two figure
    refreshes send them again, which adds nothing to the stream (its diff of an unchanged value is
    empty), where a gr.skip() costs ~0.7 ms (Gradio 6 rebuilds the component; 2-core CPU)."""
    *plots, table = figures
    return [sent(SENT_PLOT, f) for f in plots] + [sent(SENT_TABLE, table)]
