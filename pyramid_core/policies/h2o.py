"""H2O (Zhang et al., NeurIPS 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large
Language Models", arXiv 2306.14048): keep the heavy hitters and the most recent tokens.

A token's score is the attention it has received, summed over every query so far (the paper's
accumulated attention, Algorithm 1). The cache holds a fixed number of tokens, kv_budget x the prompt's
length: the newest recent_share of them, and the heavy hitters, the best-scoring of the others. After
the prefill every prompt query has voted and the cache is cut to that size; at each decode step the new
query's attention is added to the scores and, the cache being one token over, the lowest-scoring token
outside the recent window is evicted. Positions stay the original ones.

Where we depart from the paper and its code (FMInference/H2O, h2o_hf/utils_real_drop), and why:
- One set of tokens per layer, not one per head: the scores are summed over the layer's heads,
  because our cache keeps one set of positions per layer, shared by its KV heads.
- The prompt is cut once, after all of its queries voted (as the real-drop code does), not one token
  per query as in the paper's Algorithm 1 and its masked simulation.
- One budget knob split by recent_share instead of two ratios: the paper's heavy and recent ratios are
  kv_budget x (1 - recent_share) and kv_budget x recent_share (defaults: 10% each, the paper's 20%).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..transfer import to_device
from .base import ALWAYS, Keep, LayerContext, Policy, PolicyState, check_share


@dataclass
class H2OState(PolicyState):
    """What H2O remembers within one request.

    budgets: per row, the tokens its cache holds once full (fixed at the prefill, from its prompt).
    scores:  per layer, [B, P] accumulated attention indexed by original position (P grows as needed).
    """

    num_layers: int
    budgets: list[int] | None = None
    scores: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self):
        self.scores = self.scores or [None] * self.num_layers


@dataclass
class H2OPolicy(Policy):
    name = "h2o"
    kv_budget: float = field(default=0.2, metadata={"help": "tokens held, as a share of the prompt (0-1]"})
    recent_share: float = field(default=0.5, metadata={"help": "share of the held tokens that are the most recent"})

    budget_knob = "kv_budget"

    def __post_init__(self):
        check_share("kv_budget", self.kv_budget)
        if not 0.0 <= self.recent_share <= 1.0:
            raise ValueError(f"recent_share must be in [0, 1], got {self.recent_share}")

    def budget(self, prompt_tokens: int) -> int:
        """Tokens the cache holds once full, for a prompt of `prompt_tokens`."""
        return min(prompt_tokens, max(1, round(self.kv_budget * prompt_tokens)))

    def recent(self, budget: int) -> int:
        return int(self.recent_share * budget)

    def planned_kv_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[int]:
        """Tokens held over all layers after the prefill and after each decode step."""
        b = self.budget(prompt_tokens)
        return [num_layers * min(prompt_tokens + step, b) for step in range(new_tokens)]

    def new_state(self, num_layers: int) -> H2OState:
        return H2OState(num_layers)

    def prefill(self, ctx: LayerContext) -> Keep | None:
        if ctx.state.budgets is None:
            ctx.state.budgets = [self.budget(n) for n in ctx.seen]
        voters = (ctx.query_positions >= 0).float()  # every prompt query votes; pads do not
        self.accumulate(ctx, ctx.attention_scores(ctx.queries, ctx.query_positions, voters))
        return self.evict(ctx)

    def decode(self, ctx: LayerContext) -> Keep | None:
        voters = torch.ones(ctx.queries.shape[0], 1, device=ctx.queries.device)
        self.accumulate(ctx, ctx.attention_scores(ctx.queries, ctx.query_positions, voters))
        return self.evict(ctx)

    def accumulate(self, ctx: LayerContext, attention: torch.Tensor) -> None:
        """Add attention [B, T] (over the held tokens) to the layer's scores, by original position."""
        scores = ctx.state.scores[ctx.layer]
        needed = max(ctx.seen)
        if scores is None or scores.shape[1] < needed:  # room for 64 more positions: grows rarely
            grown = torch.zeros(attention.shape[0], needed + 64, device=attention.device)
            if scores is not None:
                grown[:, :scores.shape[1]] = scores
            scores = ctx.state.scores[ctx.layer] = grown
        held = ctx.positions >= 0
        scores.scatter_add_(1, ctx.positions.clamp(min=0), attention.float().masked_fill(~held, 0.0))

    def evict(self, ctx: LayerContext) -> Keep | None:
        budgets = ctx.state.budgets
        if all(held <= b for held, b in zip(ctx.counts, budgets)):
            return None
        first_recent = to_device([n - self.recent(b) for n, b in zip(ctx.seen, budgets)], ctx.positions.device)
        recent = ctx.positions >= first_recent[:, None]
        scores = ctx.state.scores[ctx.layer].gather(1, ctx.positions.clamp(min=0))
        return Keep(scores.masked_fill(recent, ALWAYS), [min(held, b) for held, b in zip(ctx.counts, budgets)])
