"""One comparison streamed to the page: every mode generating on the torch thread, while this
generator wakes whenever an update is due and yields what has been made so far.

The generation never waits for the page. When the two took turns (generate until an update was due,
then stop while Gradio built and sent it), every update's cost was added to the run, so updates had
to be rationed by that cost; on a GPU, where a step takes milliseconds, the rationing left the panes
blank until the end (issue 18). Now text streams as it is made and figures follow at their own pace
(studio/live.py); the updates only share the machine with the generation.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Iterator

from pyramid_core.compare import compare

from .context import fit_to_context
from .live import Live
from .model_cache import get_model
from .request import RunRequest
from .torch_thread import start_on_torch_thread


def stream_run(run: RunRequest, stop: threading.Event) -> Iterator[list]:
    """The panes whenever Live's cadence says (text every TEXT_EVERY_S or so, figures every
    PLOTS_EVERY_S or so); then the final update, with the run's records as state."""
    lm = get_model(run.model_id)
    max_new_tokens, note = fit_to_context(lm, run.prompt, run.max_new_tokens, run.chat)
    live = Live(lm, list(run.modes), dict(run.view), run.prompt, note, run.chat)
    records = compare(lm, run.prompt, run.policies, max_new_tokens, run.sampling, stop=stop, budget=run.budget,
                      record_attention=live.wants_detail, record_positions=live.wants_detail, detail_last=True,
                      chat=run.chat)
    job = start_on_torch_thread(generate_into, records, live)
    try:
        while update_due(job, live):
            started = time.monotonic()
            yield live.outputs()
            live.sent(time.monotonic() - started)
        job.result()  # the run's error, if it had one, is raised here
        yield live.outputs(final=True)
    finally:
        # the page left or the run was cancelled: the engine sees this before its next step, and the
        # run's cache is gone before this returns (Gradio starts the next run after that)
        stop.set()
        futures.wait([job])


def generate_into(records, live: Live) -> None:
    """Every mode's records into the live view, on the torch thread, until all finish or stop is set."""
    try:
        for mode, record in records:
            live.add(mode, record)
    finally:
        records.close()


def update_due(job: futures.Future, live: Live) -> bool:
    """Wait until an update is due and has something new to show; False once the run has ended."""
    while not futures.wait([job], timeout=live.wait_s()).done:
        if live.changed():
            return True
    return False
