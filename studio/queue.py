"""Gradio's queue: bounded, polled slowly during a run; workarounds on Gradio internals, checked by tests."""

from __future__ import annotations

import logging
import os

import gradio as gr
from gradio import queueing

from . import sessions

log = logging.getLogger(__name__)

QUEUE_POLL_S = {"sleep_when_free": 0.02, "progress_update_sleep_when_free": 0.1}
IDLE_POLL_S = 0.002  # the queue's poll while no job runs: a request starts within ~2 ms, not up to 20
# Requests waiting past those running; one more is answered BUSY at once instead of waiting minutes.
MAX_QUEUED = int(os.environ.get("PYRAMID_MAX_QUEUE", "8"))
BUSY = "The studio is busy: try again in a moment."


class QuietQueue(queueing.Queue):
    """Gradio's queue, polling for new requests every IDLE_POLL_S while it runs no job and every
    busy_poll_s while one runs (the poll's name is Gradio's, read by its loop at every turn)."""

    busy_poll_s = QUEUE_POLL_S["sleep_when_free"]

    @property
    def sleep_when_free(self) -> float:
        running = any(job is not None for job in self.active_jobs)
        return self.busy_poll_s if running else IDLE_POLL_S

    @sleep_when_free.setter
    def sleep_when_free(self, seconds: float) -> None:
        self.busy_poll_s = seconds


def quiet_queue(demo: gr.Blocks) -> gr.Blocks:
    """Slow the polling of Gradio's queue from every 1 ms (and 10 ms for progress) to QUEUE_POLL_S
    while a job runs, and to IDLE_POLL_S while none does.

    Each wake of the server's event loop takes the GIL from the thread that generates: in a 7 s run of
    the embedded model on a 2-core CPU the event loop's thread spent ~0.7 CPU-s, ~0.3 with these
    settings (benchmarks/app_overhead.md). With nothing generating the wakes cost nothing that matters,
    and a slow poll there made every request wait ~20 ms to start (benchmarks/app_gpu.md, eighth
    section), a fifth of what the server added to a sub-second GPU run. These are attributes of
    gradio.queueing.Queue, not public settings: tests/test_app.py checks that Gradio still reads them."""
    queue = demo._queue
    for name, seconds in QUEUE_POLL_S.items():
        if not hasattr(queue, name):
            log.warning("Gradio's queue has no %s any more: its polling is left as it is", name)
            continue
        setattr(queue, name, seconds)
    if type(queue) is queueing.Queue:  # Blocks made a plain Queue: it becomes a QuietQueue, state untouched
        busy = vars(queue).pop("sleep_when_free", QUEUE_POLL_S["sleep_when_free"])
        queue.__class__ = QuietQueue
        queue.sleep_when_free = busy
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
