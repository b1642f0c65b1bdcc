"""Several modes on one prompt, side by side: their engine generators advanced in turn, one step each.

One device runs one step at a time, so the modes take turns (round-robin) instead of running in
threads: every pane of the app advances together, and each mode's records are exactly those of a run
of that mode alone (its cache, policy state and random generator are its own; see engine.generate).

Also here, because the app and the CLI should not each compute them: the live numbers of a partial
run, the first character where a mode's text departs from the baseline's, and the slimming of
records kept for figures (per-step attention and positions are large).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Iterator

from .engine import Sampling
from .metrics import decode_tokens_per_s, kv_mib, peak_kv_mib
from .models import LoadedModel
from .policies.base import Policy
from .pipeline import stream_generation
from .trace import StepRecord

def compare(lm: LoadedModel, prompt: str, modes: dict[str, Policy], max_new_tokens: int,
            sampling: Sampling, record_attention=True, record_positions=True,
            stop: threading.Event | None = None) -> Iterator[tuple[str, StepRecord]]:
    """Yield (mode, record) round-robin over `modes` (in dict order) until all finish or `stop` is set.

    Round r yields step r of every mode still running: all prefills first, then the first decode
    step of each mode, and so on. A mode that finishes early drops out of the rotation. Errors of a
    mode (an empty or too long prompt) propagate at its first step, before any decode step runs.
    record_attention / record_positions: a bool, or a callable (mode, step) -> bool asked before each
    step, so that a live view records detail only for the steps it will draw.
    """
    def for_mode(flag, mode):
        return (lambda step: flag(mode, step)) if callable(flag) else flag

    running = {mode: stream_generation(lm, prompt, policy, max_new_tokens, sampling,
                                       record_attention=for_mode(record_attention, mode),
                                       record_positions=for_mode(record_positions, mode), stop=stop)
               for mode, policy in modes.items()}
    try:
        while running and not (stop is not None and stop.is_set()):
            for mode, gen in list(running.items()):
                if stop is not None and stop.is_set():
                    return
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
    """
    return {
        "tokens": len(run),
        "tokens_per_s": decode_tokens_per_s(run),
        "kv_mib": kv_mib(run[-1]) if run else 0.0,
        "peak_kv_mib": peak_kv_mib(run),
        "prompt_tokens": run[0].seen_tokens if run else 0,
    }


def first_difference(text: str, reference: str) -> int | None:
    """Index of the first character where `text` differs from `reference`, within their common length.

    None when one is a prefix of the other: a text that is only longer than the reference so far has
    not (yet) departed from it.
    """
    for i, (a, b) in enumerate(zip(text, reference)):
        if a != b:
            return i
    return None


def slim(run: list[StepRecord]) -> None:
    """When the newest record of a growing run carries attention or kept positions, drop them from the
    records before it (the prefill's excepted), in place.

    What the figures need is the prefill's and the latest recorded; keeping them for every step would
    grow with layers x heads x tokens per step. Called after every append, so older records are
    already slim: the walk back stops at the first record that holds whatever the newest one holds.
    """
    new = run[-1]
    wanted = {"attention": new.attention is not None, "kept_positions": new.kept_positions is not None}
    for i in range(len(run) - 2, 0, -1):
        if not any(wanted.values()):
            return
        old = run[i]
        drop = {k: None for k, want in wanted.items() if want and getattr(old, k) is not None}
        if drop:
            run[i] = dataclasses.replace(old, **drop)
            wanted.update({k: False for k in drop})
