"""The server's long-lived objects kept out of the garbage collector's full passes.

A full (oldest-generation) collection walks every object the collector tracks, and it holds the GIL
while it does: every thread stops, the event loop that sends the page its updates too. With a model,
torch, transformers, Gradio and Plotly loaded that is ~0.6M objects and ~0.3 s on the project's 2-core
CPU; a run makes enough new objects to set one off every request or so. On a GPU, where a run takes
about a second, such a pause is a third of it (benchmarks/app_gpu.md). `gc.freeze()` moves everything
alive now into a permanent generation that collections skip, so what is left to walk is one request's
own objects (one pass after settle(): 0.3 ms).

The young generation is collected less often than Python's default (every 700 net new containers): a
run's records hold lists of every held position and attention weight, which each young collection walks
again, and at 700 a request of seven modes on a 3,000-token prompt set off ~9 of them and a middle one,
20-36 ms of stopped threads, 5-19 ms of it inside the final update (benchmarks/app_gpu.md, ninth section).
At YOUNG_THRESHOLD the same requests set off none: most of what a request makes is freed with it.
"""

from __future__ import annotations

import atexit
import gc

atexit.register(gc.unfreeze)  # at exit everything is collectable again, as extension modules expect
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect, then freeze what is left. Called when the set of long-lived objects changes (the page is
    built, a model is loaded or evicted): what an earlier call froze is thawed first, since an evicted
    model may be garbage now, and a frozen cycle would never be freed (nor its GPU memory). The young
    generation's threshold is raised to YOUNG_THRESHOLD (never lowered)."""
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), *older)
    gc.unfreeze()
    gc.collect()
    gc.freeze()
