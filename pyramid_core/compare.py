"""Several modes on one prompt, side by side: their engine generators advanced in turn, one step each.

One device runs one step at a time, so the modes take turns (round-robin) instead of running in
threads: every pane of the app advances together, and each mode's records are exactly those of a run
of that mode alone (its cache, policy state and random generator are its own; see engine.generate).

Also here, because the app and the CLI should not each compute them: the live numbers of a partial run.
"""

from __future__ import annotations

import threading
from typing import Iterator

from .budget import Budget
from .engine import Sampling
from .metrics import decode_tokens_per_s, kv_mib, kv_share_asked, kv_share_reached, peak_kv_mib
from .models import LoadedModel
from .policies.base import Policy
from .pipeline import stream_generation
from .trace import StepRecord

def compare(lm: LoadedModel, prompt: str, modes: dict[str, Policy], max_new_tokens: int,
            sampling: Sampling, record_attention=True, record_positions=True,
            stop: threading.Event | None = None, budget: Budget | None = None,
            detail_last: bool = False) -> Iterator[tuple[str, StepRecord]]:
    """Yield (mode, record) round-robin over `modes` (in dict order) until all finish or `stop` is set.

    Round r yields step r of every mode still running: all prefills first, then the first decode
    step of each mode, and so on. A mode that finishes early drops out of the rotation. Errors of a
    mode (an empty or too long prompt) propagate at its first step, before any decode step runs.
    record_attention / record_positions: a bool, or a callable (mode, step) -> bool asked before each
    step, so that a live view records detail only for the steps it will draw.
    budget: the KV budget every mode that takes one is solved for (budget.py); the others run as given.
    detail_last: each mode's last record carries attention and kept positions whatever those
    answered (engine.generate). Once `stop` is set, each mode still running takes one more step (its
    last, recorded in detail).
    """
    def for_mode(flag, mode):
        return (lambda step: flag(mode, step)) if callable(flag) else flag

    running = {mode: stream_generation(lm, prompt, policy, max_new_tokens, sampling,
                                       budget if policy.budget_knob is not None else None,
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


def live_stats(run: list[StepRecord]) -> dict:
    """Numbers for a mode's pane from its records so far (first sequence).

    tokens_per_s is the summary table's decode tokens/s (metrics.py), over the engine's own step
    times, so it is the mode's speed however the modes share the device; None until a decode step ran.
    kv_share_reached is averaged over the records so far; kv_share_asked is the budget's (None: none).
    """
    return {
        "tokens": len(run),
        "kv_share_asked": kv_share_asked(run),
        "kv_share_reached": kv_share_reached(run) if run else None,
        "tokens_per_s": decode_tokens_per_s(run),
        "kv_mib": kv_mib(run[-1]) if run else 0.0,
        "peak_kv_mib": peak_kv_mib(run),
        "prompt_tokens": run[0].seen_tokens if run else 0,
    }
