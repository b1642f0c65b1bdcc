"""StreamingLLM-style "local" retention (Xiao et al. 2023): attention sinks plus a recent window.

PyramidInfer's paper compares against this "local" strategy at equal KV budgets: kv_budget is the
share of the tokens seen so far that every layer holds, at every step. (A number of tokens is asked
for through budget.py's kv_tokens, which the solver turns into this share.) Every layer keeps the same
tokens: the first sink_len and the most recent ones. The prefill runs in full and the cache is then
cut (cache-only eviction); at decode the oldest non-sink token is evicted whenever a layer holds more
than its budget. Positions stay the original ones (no re-rotation).

Decode answers with a `Window` (base.py), not scores: the cache then overwrites the evicted slot with
the next token (a ring, cache.py) instead of sorting and compacting the whole layer at every step,
which made streaming decode at 0.37x the baseline's tokens/s (H200, embedded model, 1k + 256). The
kept tokens are the same: a layer holds its sinks and a contiguous run of the newest tokens, so "the
newest b - sink_len" and "positions from seen - (b - sink_len) on" name the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..transfer import to_device
from .base import Keep, LayerContext, Policy, PolicyState, QuietStep, Window, check_share


@dataclass
class StreamingPolicy(Policy):
    name = "streaming"
    sink_len: int = field(default=4, metadata={"help": "first tokens always kept"})
    kv_budget: float = field(default=0.5, metadata={"help": "share of the seen tokens held (0-1]"})

    budget_knob = "kv_budget"

    def __post_init__(self):
        if int(self.sink_len) != self.sink_len or self.sink_len < 0:
            raise ValueError(f"sink_len must be an integer >= 0, got {self.sink_len}")
        check_share("kv_budget", self.kv_budget)

    def budget(self, seen: int) -> int:
        return min(seen, max(round(self.kv_budget * seen), self.sink_len + 1))

    def planned_kv_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[int]:
        """Tokens held over all layers after the prefill and after each decode step."""
        return [num_layers * self.budget(prompt_tokens + step) for step in range(new_tokens)]

    def keep(self, ctx: LayerContext) -> Keep | None:
        budgets = [self.budget(n) for n in ctx.seen]
        if all(held <= b for held, b in zip(ctx.counts, budgets)):
            return None
        first_recent = to_device([n - (b - min(self.sink_len, b)) for n, b in zip(ctx.seen, budgets)],
                                 ctx.positions.device)
        stays = (ctx.positions < self.sink_len) | (ctx.positions >= first_recent[:, None])
        return Keep(stays.float(), [min(held, b) for held, b in zip(ctx.counts, budgets)])

    def prefill(self, ctx: LayerContext) -> Keep | None:
        return self.keep(ctx)

    def decode(self, ctx: LayerContext) -> Window | None:
        return self.window_answer(ctx.counts, ctx.seen)

    def window_answer(self, counts: list[int], seen: list[int]) -> Window | None:
        """Keep the sinks and the newest tokens within each row's budget; None while every row fits."""
        budgets = [self.budget(n) for n in seen]
        if all(held <= b for held, b in zip(counts, budgets)):
            return None
        return Window(self.sink_len, [min(held, b) for held, b in zip(counts, budgets)])

    def quiet_step(self, state: PolicyState, counts: list[list[int]], seen: list[int]) -> QuietStep:
        """Every decode step: its answers are windows, which the cache carries out on the host (a ring frees
        the oldest non-sink slot for the next token) after the step's graph."""
        # every layer holds the same tokens: one answer serves a run of layers with the same counts (host time)
        answers, last_held, answer = [], None, None
        for layer, held in enumerate(counts):
            if held != last_held:
                last_held, answer = held, self.window_answer(held, seen)
            if answer is not None:
                answers.append((layer, answer))
        quiet = QuietStep()
        quiet.answers = tuple(answers)
        return quiet
