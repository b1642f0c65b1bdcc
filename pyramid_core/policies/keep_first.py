"""The smallest policy that drops anything: each layer keeps a row's first n tokens and its newest token.

The worked example of docs/policies.md. Not a mode of the studio (it forgets everything in the middle
of a text), but a policy like any other: generate(lm, ids, policy=KeepFirstPolicy(n=8)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import ALWAYS, Keep, LayerContext, Policy


@dataclass
class KeepFirstPolicy(Policy):
    name = "keep-first"
    n: int = field(default=8, metadata={"help": "first tokens kept in every layer"})

    def __post_init__(self):
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n}")

    def keep(self, ctx: LayerContext) -> Keep | None:
        if all(held <= self.n + 1 for held in ctx.counts):
            return None
        # the first n by position score highest, the newest token must stay, every other token scores 0
        scores = (ctx.positions < self.n).float()
        scores[:, -1] = ALWAYS
        return Keep(scores, [min(held, self.n + 1) for held in ctx.counts])

    def prefill(self, ctx: LayerContext) -> Keep | None:
        return self.keep(ctx)

    def decode(self, ctx: LayerContext) -> Keep | None:
        return self.keep(ctx)
