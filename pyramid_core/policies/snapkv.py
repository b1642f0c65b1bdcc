"""SnapKV (Li et al., NeurIPS 2024, "SnapKV: LLM Knows What You are Looking for Before Generation",
arXiv 2404.14469): the end of the prompt votes for the prompt tokens worth keeping.

At the prefill, in every layer, the last window_size prompt tokens (the observation window) vote: each
earlier token's score is the attention the window's queries give it, summed over the window, then
smoothed over neighbouring positions by a 1-D pooling of kernel_size (max or average) so that a kept
token brings its neighbours. The window and the best-scoring earlier tokens stay, kv_budget x the
prompt's length in all; a prompt that fits is not compressed. Decoding adds tokens and evicts none.
Defaults are the paper's LongBench setting (window 32, kernel 7, max pooling); the paper gives budgets
as token counts (1024 to 4096 of long prompts), ours is a share, 20% by default as for H2O.

Where we depart from the paper and its code (FasterDecoding/SnapKV), and why:
- One vote per layer, not one per KV head: the window's attention is averaged over the layer's heads
  before pooling, because our cache keeps one set of positions per layer, shared by its KV heads.
- The layer's cache is cut after its prefill (cache-only); hidden states are unchanged, as in the paper.
- A budget smaller than the window keeps the window (the least SnapKV can keep), not fewer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..transfer import to_device
from .base import ALWAYS, Keep, LayerContext, Policy, check_share

POOLINGS = ("maxpool", "avgpool")


@dataclass
class SnapKVPolicy(Policy):
    name = "snapkv"
    kv_budget: float = field(default=0.2, metadata={"help": "prompt tokens kept, as a share of the prompt (0-1]"})
    window_size: int = field(default=32, metadata={"help": "observation window: the last prompt tokens, who vote"})
    kernel_size: int = field(default=7, metadata={"help": "pooling width over positions (odd)"})
    pooling: str = field(default="maxpool", metadata={"help": "maxpool | avgpool"})

    budget_knob = "kv_budget"

    def __post_init__(self):
        check_share("kv_budget", self.kv_budget)
        if int(self.window_size) != self.window_size or self.window_size < 1:
            raise ValueError(f"window_size must be an integer >= 1, got {self.window_size}")
        if int(self.kernel_size) != self.kernel_size or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    def prompt_keep(self, prompt_tokens: int) -> int:
        """Prompt tokens a layer keeps: the budget, and never fewer than the window."""
        return min(prompt_tokens, max(self.window_size, round(self.kv_budget * prompt_tokens)))

    def planned_kv_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[int]:
        """Tokens held over all layers after the prefill and after each decode step."""
        return [num_layers * (self.prompt_keep(prompt_tokens) + step) for step in range(new_tokens)]

    def prefill(self, ctx: LayerContext) -> Keep | None:
        keep = [self.prompt_keep(n) for n in ctx.seen]
        if all(held <= k for held, k in zip(ctx.counts, keep)):
            return None
        width = min(self.window_size, ctx.queries.shape[2])
        q, q_pos = ctx.queries[:, :, -width:], ctx.query_positions[:, -width:]
        votes = ctx.attention_scores(q, q_pos, (q_pos >= 0).float())  # [B, T]
        first_window = to_device([n - min(self.window_size, n) for n in ctx.seen], ctx.positions.device)
        window = ctx.positions >= first_window[:, None]
        # only the tokens before the window are pooled: the window and pads count as zeros around them
        votes = votes.masked_fill(window | (ctx.positions < 0), 0.0)
        return Keep(self.pool(votes).masked_fill(window, ALWAYS), [min(h, k) for h, k in zip(ctx.counts, keep)])

    def pool(self, votes: torch.Tensor) -> torch.Tensor:
        """votes [B, T] smoothed over kernel_size neighbouring positions, zero-padded at both ends."""
        pad = self.kernel_size // 2
        if self.pooling == "maxpool":  # votes are >= 0, so max-pool's -inf padding acts as zeros
            return F.max_pool1d(votes[:, None], self.kernel_size, stride=1, padding=pad)[:, 0]
        return F.avg_pool1d(votes[:, None], self.kernel_size, stride=1, padding=pad, count_include_pad=True)[:, 0]
