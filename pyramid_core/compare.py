"""Several modes on one prompt, side by side: their engine generators advanced in turn, one step each.

One device runs one step at a time, so the modes take turns (round-robin) instead of running in
threads: every pane of the app advances together, and each mode's records are exactly those of a run
of that mode alone (its cache, policy state and random generator are its own; see engine.generate).
The numbers of a run, partial or whole, are metrics.py's.
"""

from __future__ import annotations

import threading
from typing import Iterator

from .budget import Budget
from .engine import Sampling
from .models import LoadedModel
from .policies.base import Policy
from .pipeline import stream_generation
from .trace import StepRecord

def compare(lm: LoadedModel, prompt: str, modes: dict[str, Policy], max_new_tokens: int,
            sampling: Sampling, record_attention=True, record_positions=True,
            stop: threading.Event | None = None, budget: Budget | None = None,
            detail_last: bool = False, chat: bool = False) -> Iterator[tuple[str, StepRecord]]:
    """Yield (mode, record) round-robin over `modes` (in dict order) until all finish or `stop` is set.

    Round r yields step r of every mode still running: all prefills first, then the first decode
    step of each mode, and so on. A mode that finishes early drops out of the rotation. Errors of a
    mode (an empty or too long prompt) propagate at its first step, before any decode step runs.
    record_attention / record_positions: a bool, or a callable (mode, step) -> bool asked before each
    step, so that a live view records detail only for the steps it will draw.
    budget: the KV budget every mode that takes one is solved for (budget.py); the others run as given.
    detail_last: each mode's last record carries attention and kept positions whatever those
    answered (engine.generate). Once `stop` is set, each mode still running takes one more step (its
    last, recorded in detail). chat: every mode reads the prompt in the chat template (prompting.py).
    """
    def for_mode(flag, mode):
        return (lambda step: flag(mode, step)) if callable(flag) else flag

    running = {mode: stream_generation(lm, prompt, policy, max_new_tokens, sampling,
                                       budget if policy.budget_knob is not None else None, chat,
                                       record_attention=for_mode(record_attention, mode),
                                       record_positions=for_mode(record_positions, mode), stop=stop,
                                       detail_last=detail_last)
               for mode, policy in modes.items()}
    try:
        while running:
            for mode, gen in list(running.items()):
                record = next(gen, None)
                if record is None:
                    del running[mode]
                    continue
                yield mode, record
    finally:
        for gen in running.values():
            gen.close()

