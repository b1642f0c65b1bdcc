"""StreamingLLM-style "local" retention (Xiao et al. 2023): attention sinks plus a recent window.

PyramidInfer's paper compares against this "local" strategy at equal KV budgets, so the budget is
given the same way: a share of the tokens seen so far (kv_budget <= 1) or a fixed token count (> 1).
Every layer keeps the same tokens: the first sink_len and the most recent ones. The prefill runs in
full and the cache is then cut (cache-only eviction); at decode the oldest non-sink token is evicted
whenever a layer holds more than its budget. Positions stay the original ones (no re-rotation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..transfer import to_device
from .base import Keep, LayerContext, Policy


@dataclass
class StreamingPolicy(Policy):
    name = "streaming"
    sink_len: int = field(default=4, metadata={"help": "first tokens always kept"})
    kv_budget: float = field(default=0.5, metadata={"help": "share of seen tokens (0-1] or a token count (>1)"})

    def __post_init__(self):
        if int(self.sink_len) != self.sink_len or self.sink_len < 0:
            raise ValueError(f"sink_len must be an integer >= 0, got {self.sink_len}")
        if not self.kv_budget > 0:
            raise ValueError(f"kv_budget must be a share in (0, 1] or a token count > 1, got {self.kv_budget}")

    @classmethod
    def configure(cls, knobs: dict, preset: str | None = None, kv_budget=None) -> "StreamingPolicy":
        if preset is not None:
            raise ValueError("the streaming mode has no presets; give --kv-budget")
        return cls(**{**knobs, **({"kv_budget": float(kv_budget)} if kv_budget is not None else {})})

    def budget(self, seen: int) -> int:
        tokens = round(self.kv_budget * seen) if self.kv_budget <= 1 else int(self.kv_budget)
        return min(seen, max(tokens, self.sink_len + 1))

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

    def decode(self, ctx: LayerContext) -> Keep | None:
        return self.keep(ctx)
