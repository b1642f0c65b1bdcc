"""The server's long-lived objects kept out of the garbage collector's full passes.

A full (oldest-generation) collection walks every object the collector tracks, and it holds the GIL
while it does: every thread stops, the event loop that sends the page its updates too. With a model,
torch, transformers, Gradio and Plotly loaded that is ~0.6M objects and ~0.3 s on the project's 2-core
CPU; a run makes enough new objects to set one off every request or so. On a GPU, where a run takes
about a second, such a pause is a third of it (benchmarks/app_gpu.md). `gc.freeze()` moves everything
alive now into a permanent generation that collections skip, so what is left to walk is one request's
own objects (one pass after settle(): 0.3 ms).
"""

from __future__ import annotations

import atexit
import gc

atexit.register(gc.unfreeze)  # at exit everything is collectable again, as extension modules expect


def settle() -> None:
    """Collect, then freeze what is left. Called when the set of long-lived objects changes (the page is
    built, a model is loaded or evicted): what an earlier call froze is thawed first, since an evicted
    model may be garbage now, and a frozen cycle would never be freed (nor its GPU memory)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
