"""Python's full (oldest-generation) collections deferred while any generation decodes.

A full collection walks every object the process tracks: ~300 ms with torch, transformers and a tiny model
loaded on this project's CPU (benchmarks/gc_cost_cpu_2026-12-02.json). On the GPU machine, Table 1's
PyramidInfer run at 134 rows of a 13B shape had one decode step of 250-300 ms at a step that moved between
runs (benchmarks/profiles/table1_pyramid45_134_2026-12-02_before.txt, _after.txt), which a full collection
fits; with the deferral the step is gone (_voters_sized.txt). The young generations are still collected as
they fill (their cost is bounded by the young objects); the full collection waits until no generation is
running, and the request's own cycles are broken without it (engine.release_graphs).

Process-wide, as the collector is: the first generation to start raises the oldest generation's threshold,
the last to end puts back what it found. Python 3.14's incremental collector has no full pauses to defer and
ignores that threshold.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

NEVER = 1 << 30  # young collections before a full one: none while a generation runs

_lock = threading.Lock()
_running = 0
_saved: tuple[int, ...] | None = None


@contextmanager
def full_collections_deferred():
    """Within: no automatic full collection (an explicit gc.collect() still runs one)."""
    global _running, _saved
    with _lock:
        if _running == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], NEVER)
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                gc.set_threshold(*_saved)
