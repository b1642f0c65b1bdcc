"""Gradio's queue, bounded and polled slowly: workarounds on Gradio internals, checked by tests."""

from __future__ import annotations

import logging
import os

import gradio as gr

from . import sessions

log = logging.getLogger(__name__)

QUEUE_POLL_S = {"sleep_when_free": 0.02, "progress_update_sleep_when_free": 0.1}
# Requests waiting past those running; one more is answered BUSY at once instead of waiting minutes.
MAX_QUEUED = int(os.environ.get("PYRAMID_MAX_QUEUE", "8"))
BUSY = "The studio is busy: try again in a moment."


def quiet_queue(demo: gr.Blocks) -> gr.Blocks:
    """Slow the polling of Gradio's queue from every 1 ms (and 10 ms for progress) to QUEUE_POLL_S.

    Each wake of the server's event loop takes the GIL from the thread that generates: in a 7 s run of
    the embedded model on a 2-core CPU the event loop's thread spent ~0.7 CPU-s, ~0.3 with these
    settings (benchmarks/app_overhead.md). 20 ms more before a queued event starts is not noticeable.
    These are attributes of gradio.queueing.Queue, not public settings: tests/test_studio_app.py checks
    that Gradio still reads them."""
    for name, seconds in QUEUE_POLL_S.items():
        if not hasattr(demo._queue, name):
            log.warning("Gradio's queue has no %s any more: its polling is left as it is", name)
            continue
        setattr(demo._queue, name, seconds)
    return demo


def bounded_queue(demo: gr.Blocks, max_size: int = MAX_QUEUED) -> gr.Blocks:
    """At most max_size requests wait; past that a request is refused at once with BUSY, not Gradio's
    "Queue is full. Max size is 16 and size is 16." (Queue.push's answer, reworded here)."""
    queue = demo._queue
    queue.max_size = max_size
    push = queue.push

    async def push_or_busy(*args, **kwargs):
        accepted, detail, state = await push(*args, **kwargs)
        return accepted, BUSY if state == "queue_full" else detail, state

    queue.push = push_or_busy
    return demo


def stop_on_disconnect(demo: gr.Blocks) -> gr.Blocks:
    """A client that leaves stops its session's generation before the next decode step.

    Gradio learns of a closed connection in its stream loop and then calls Queue.clean_events, which
    marks the session's jobs dead; but a job's generator is told only when it next yields, and the
    generation runs on the torch thread without waiting for it. Wrapping clean_events sets the
    session's stop event at that moment, as the Stop button does."""
    queue = demo._queue
    clean_events = queue.clean_events

    async def clean_and_stop(*, session_hash: str | None = None, event_id: str | None = None):
        leaving = session_hash
        if leaving is None and event_id is not None:  # one event cancelled: its session's run stops
            leaving = getattr(queue.event_ids_to_events.get(event_id), "session_hash", None)
        if leaving is not None:
            sessions.stop_session(leaving)
        await clean_events(session_hash=session_hash, event_id=event_id)

    queue.clean_events = clean_and_stop
    return demo
