"""The studio's helpers, which app.py wires into its layout: the modes it offers (modes.py), the knob
widgets and policies (knobs.py), one run's request from the form (request.py), the loaded-model cache
(model_cache.py), the live state of a run and its refresh schedule (live.py, stream.py), pane HTML
(panes.py), figure assembly (figures.py), export (export.py), per-session stops (sessions.py), the
error boundary (errors.py), Gradio's queue polling (queue.py) and the one thread for torch work
(torch_thread.py).

The app's side of the arrows: studio imports gradio, pyramid_core and visual; pyramid_core and visual
import nothing of it.
"""
