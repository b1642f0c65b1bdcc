"""How much of a step the policy's scoring and selection take (PyramidInfer paper, appendix A.1).

A proxy policy times each call of the wrapped policy; the engine's records give the step times. On a
GPU it records a CUDA event before and after each call and waits for none of them: the time between a
pair is what the call added to the stream's timeline (its kernels where the GPU is the bound, its
launches where the host is), and the run is not slowed. Until 2026-11-30 it synchronised before and
after every call instead, 2 x layers waits a step, which made the measure mostly its own waits
(benchmarks/modes/README.md). On a CPU the calls are timed by the host clock.
"""

from __future__ import annotations

import time

import torch

from ..engine import generate
from ..policies.base import Policy
from .harness import random_prompts


class TimedPolicy:
    """A policy that times its inner policy's answers, and is that policy in every other respect.

    Only prefill and decode are wrapped; every other attribute (recurrent_modules, new_state, name,
    describe, and whatever a later contract adds) is the inner policy's own, looked up on it, so a
    wrapper cannot silently drop part of a policy: timing RecurFormer once ran the baseline because a
    hand-written proxy forwarded four methods and inherited the base policy's recurrent_modules.
    """

    def __init__(self, inner: Policy):
        self.inner = inner
        self.spans = {"prefill": [], "decode": []}  # per call: (start, end) CUDA events, or seconds

    def __getattr__(self, name):  # called only for what this class does not define itself
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prefill(self, ctx):
        return self._timed("prefill", self.inner.prefill, ctx)

    def decode(self, ctx):
        return self._timed("decode", self.inner.decode, ctx)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far; on a GPU this waits for the recorded events."""
        return {phase: sum(map(span_seconds, spans)) for phase, spans in self.spans.items()}

    def _timed(self, phase, answer, ctx):
        if ctx.queries.device.type != "cuda":
            start = time.perf_counter()
            keep = answer(ctx)
            self.spans[phase].append(time.perf_counter() - start)
            return keep
        # the layer's own GPU (under a device_map it need not be the current device)
        stream = torch.cuda.current_stream(ctx.queries.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        keep = answer(ctx)
        end.record(stream)
        self.spans[phase].append((start, end))
        return keep


def span_seconds(span: float | tuple) -> float:
    """A call's seconds: the host clock's, or the time between its two CUDA events once the second is done."""
    if isinstance(span, float):
        return span
    start, end = span
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def sync() -> None:
    """Wait for the GPU, so a timed call includes its kernels (nothing to wait for on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure_overhead(lm, policy: Policy, batch: int, prompt_len: int, new_tokens: int) -> dict:
    ids = random_prompts(batch, prompt_len, lm.config.vocab_size)
    for _ in range(2):  # the second run: the first at a new batch size may include kernel compilation
        timed = TimedPolicy(policy)
        records = list(generate(lm, ids, policy=timed, max_new_tokens=new_tokens))
    prefill_s = records[0].step_time_s
    decode_s = sum(r.step_time_s for r in records[1:])
    steps, seconds = len(records) - 1, timed.seconds
    return {"batch": batch, "prefill_s": prefill_s, "prefill_policy_s": seconds["prefill"],
            "prefill_share": seconds["prefill"] / prefill_s,
            "decode_step_ms": 1e3 * decode_s / steps, "decode_policy_ms": 1e3 * seconds["decode"] / steps,
            "decode_share": seconds["decode"] / decode_s}
