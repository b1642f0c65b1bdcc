"""One comparison streamed to the page: every mode generating on the torch thread, the live view's
updates yielded whenever they are due."""

from __future__ import annotations

import threading
import time
from typing import Iterator

from pyramid_core.compare import compare

from .context import fit_to_context
from .live import Live
from .model_cache import get_model
from .request import RunRequest
from .torch_thread import on_torch_thread


def stream_run(run: RunRequest, stop: threading.Event) -> Iterator[list]:
    """The panes every TEXT_EVERY_S and the figures every PLOTS_EVERY_S, or less often when their
    updates cost more (Live.sent); then the final update, with the run's records as state."""
    lm = get_model(run.model_id)
    max_new_tokens, note = fit_to_context(lm, run.prompt, run.max_new_tokens, run.chat)
    live = Live(lm, list(run.modes), dict(run.view), run.prompt, note, run.chat)
    records = compare(lm, run.prompt, run.policies, max_new_tokens, run.sampling, stop=stop, budget=run.budget,
                      record_attention=live.wants_detail, record_positions=live.wants_detail, detail_last=True,
                      chat=run.chat)
    try:
        while not on_torch_thread(advance, records, live):
            started = time.monotonic()
            yield live.outputs()
            live.sent(time.monotonic() - started)
        yield live.outputs(final=True)
    finally:
        on_torch_thread(records.close)  # a stream closed early (the page left) ends the generation


def advance(records, live: Live) -> bool:
    """Generate until the panes are due; True once every mode has finished."""
    for mode, record in records:
        live.add(mode, record)
        if live.due():
            return False
    return True
