"""How much of a step the policy's scoring and selection take (PyramidInfer paper, appendix A.1).

A proxy policy times each call of the wrapped policy between two device synchronisations; the
engine's records give the step times. The synchronisations slow the run a little, so this measures
shares, not throughput.
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
        self.seconds = {"prefill": 0.0, "decode": 0.0}

    def __getattr__(self, name):  # called only for what this class does not define itself
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prefill(self, ctx):
        return self._timed("prefill", self.inner.prefill, ctx)

    def decode(self, ctx):
        return self._timed("decode", self.inner.decode, ctx)

    def _timed(self, phase, answer, ctx):
        sync()
        start = time.perf_counter()
        keep = answer(ctx)
        sync()
        self.seconds[phase] += time.perf_counter() - start
        return keep


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
    steps = len(records) - 1
    return {"batch": batch, "prefill_s": prefill_s, "prefill_policy_s": timed.seconds["prefill"],
            "prefill_share": timed.seconds["prefill"] / prefill_s,
            "decode_step_ms": 1e3 * decode_s / steps, "decode_policy_ms": 1e3 * timed.seconds["decode"] / steps,
            "decode_share": timed.seconds["decode"] / decode_s}
