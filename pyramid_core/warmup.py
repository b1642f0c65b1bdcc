"""One-time work noticed while an engine step runs: a CUDA graph capture, a Triton kernel compilation.

Such work happens once per process (or per model and batch shape), on whichever step first needs it,
and on a GPU it can take longer than the rest of a short run: a first CLI run once reported
PyramidInfer at 69-84 tokens/s where its warm rate was ~390 (issue 19). The places that do it call
`note()` (or `first_time(key)`); the engine compares `count()` before and after a step, and a step that
did any is recorded as warm-up (StepRecord.warmup_s), which metrics.decode_tokens_per_s leaves out.

Counts are per thread: the app runs several requests at once, and a graph captured or a kernel
compiled by another request's step must not make this one's step look like warm-up. The work runs on
the thread that steps the request, so that thread is the one that sees it.
"""

from __future__ import annotations

import threading
from typing import Hashable

_local = threading.local()
_seen: set = set()
_seen_lock = threading.Lock()


def note() -> None:
    """The calling thread just did one-time work."""
    _local.count = count() + 1


def count() -> int:
    """How much one-time work the calling thread has noted so far (only changes matter)."""
    return getattr(_local, "count", 0)


def first_time(key: Hashable) -> bool:
    """Whether this process meets `key` for the first time; if so, noted as one-time work. Kernel
    launchers pass what their compilation is specialised on, so the first launch of each variant
    counts as warm-up."""
    with _seen_lock:
        new = key not in _seen
        _seen.add(key)
    if new:
        note()
    return new
