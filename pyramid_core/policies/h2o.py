"""H2O (Zhang et al., NeurIPS 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large
Language Models", arXiv 2306.14048): keep the heavy hitters and the most recent tokens.

A token's score is the attention it has received, summed over every query so far (the paper's
accumulated attention, Algorithm 1). The cache holds a fixed number of tokens, kv_budget x the prompt's
length: the newest recent_share of them, and the heavy hitters, the best-scoring of the others. After
the prefill every prompt query has voted and the cache is cut to that size; at each decode step the new
query's attention is added to the scores and, the cache being one token over, the lowest-scoring token
outside the recent window is evicted. Positions stay the original ones.

A decode step answers with an `Evict` (base.py): each row's lowest-scoring slot is chosen on the device
and the next token is written into it (cache.py), where a Keep sorted, gathered and reallocated the
whole layer at every step (H2O at 0.15-0.42x the baseline's tokens/s, H200, 2026-11-30). The votes
come from the new query alone (one pass of q.K over the held keys, kernels/scores.py); the attention
step's own probabilities are not kept by its fused kernels. With FUSED_STEP on, decode keeps the scores
per cache slot instead (kernels/h2o_step.py): the scoring, the update and the Evict's scores are one
call (two Triton kernels on CUDA); a slot whose position changed since the last step holds the token
the cache wrote into the freed slot, and its score restarts there, on the device. Once a layer is full
(`steady`) the engine runs its whole step, this policy's part included (`steady_scores`), as one CUDA
graph (evict_graphs.py): the host had bound the step.

Where we depart from the paper and its code (FMInference/H2O, h2o_hf/utils_real_drop), and why:
- One set of tokens per layer, not one per head: the scores are summed over the layer's heads,
  because our cache keeps one set of positions per layer, shared by its KV heads.
- The prompt is cut once, after all of its queries voted (as the real-drop code does), not one token
  per query as in the paper's Algorithm 1 and its masked simulation.
- One budget knob split by recent_share instead of two ratios: the paper's heavy and recent ratios are
  kv_budget x (1 - recent_share) and kv_budget x recent_share (defaults: 10% each, the paper's 20%).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..kernels.h2o_step import h2o_attend_step, h2o_step
from ..transfer import to_device
from .base import ALWAYS, Evict, Keep, LayerContext, Policy, PolicyState, QuietStep, check_share

# Decode with scores kept per cache slot (issue 19): once full, a layer's step is h2o_step (on CUDA two
# Triton kernels, kernels/h2o_step_triton.py; elsewhere its twin) plus the cache's Evict, where the
# position-indexed path launched about ten kernels more. Read when a request starts (H2OState.by_slot).
# On by default since its kernels were spread over KV heads: in the same rounds on an H200 the mode decodes
# 1.08-1.24x faster with it than on the position path (benchmarks/modes/README.md, sixth session).
# PYRAMID_FUSED_H2O_STEP=0 turns it off.
FUSED_STEP = os.environ.get("PYRAMID_FUSED_H2O_STEP", "1") != "0"


@dataclass
class H2OState(PolicyState):
    """What H2O remembers within one request.

    budgets: per row, the tokens its cache holds once full (fixed at the prefill, from its prompt).
    scores:  per layer, [B, P] accumulated attention indexed by original position (P grows as needed).
    by_slot: decode with slot-indexed scores (FUSED_STEP when the request started).
    slots:   per layer, (scores [B, T] float32, positions [B, T] long) of each cache slot at the last
             step, by_slot only: made from `scores` at the first decode step, which then goes.
    on_device, last_old: decode's small tensors, made once per device (device_tensors) and per step
             (last_old).
    """

    num_layers: int
    budgets: list[int] | None = None
    scores: list[torch.Tensor | None] = field(default_factory=list)
    by_slot: bool = field(default_factory=lambda: FUSED_STEP)
    slots: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    on_device: dict = field(default_factory=dict)  # device -> (voter weights, recent windows)
    last_old: tuple[tuple, torch.Tensor] | None = None  # ((seen of row 0, device), last_old()) of this step

    def __post_init__(self):
        self.scores = self.scores or [None] * self.num_layers
        self.slots = self.slots or [None] * self.num_layers


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

    def decode(self, ctx: LayerContext) -> Evict | Keep | None:
        state = ctx.state
        full = all(held == b + 1 for held, b in zip(ctx.counts, state.budgets))
        if state.by_slot and full:
            scores, last = self.slot_state(ctx)
            return Evict(h2o_step(ctx.queries, ctx.query_positions, ctx.keys, ctx.positions, scores, last,
                                  self.device_tensors(ctx)[1], ctx.scale))
        if state.slots[ctx.layer] is not None:
            self.scores_by_position(ctx)
        slots = ctx.positions.clamp(min=0)
        self.accumulate(ctx, ctx.attention_scores(ctx.queries, ctx.query_positions,
                                                  self.device_tensors(ctx)[0]), slots)
        if not full:
            return self.evict(ctx)  # not every row one over its budget (never once the prefill cut)
        recent = ctx.positions > self.last_old(ctx)
        return Evict(state.scores[ctx.layer].gather(1, slots).masked_fill(recent, ALWAYS))

    def slot_state(self, ctx: LayerContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's slot scores and the positions they were kept for, [B, T] views (by_slot).

        Made at the first decode step from the position-indexed scores: the new token's slot gets its
        position's score, 0, and restarts from its own attention in h2o_step like any new token. Slots the
        cache added since (a block more) start with position -2, which no slot holds: they restart too.
        """
        state, T = ctx.state, ctx.positions.shape[1]
        held = state.slots[ctx.layer]
        if held is None:
            by_position = state.scores[ctx.layer]
            if by_position.shape[1] < max(ctx.seen):
                by_position = torch.nn.functional.pad(by_position, (0, max(ctx.seen) - by_position.shape[1]))
            scores = by_position.gather(1, ctx.positions.clamp(min=0)).masked_fill(ctx.positions < 0, 0.0)
            held = (scores, ctx.positions.clone())
            state.scores[ctx.layer] = None
        elif held[0].shape[1] < T:
            grow = T - held[0].shape[1]
            held = (torch.nn.functional.pad(held[0], (0, grow)), torch.nn.functional.pad(held[1], (0, grow), value=-2))
        state.slots[ctx.layer] = held
        return held[0][:, :T], held[1][:, :T]

    def scores_by_position(self, ctx: LayerContext) -> None:
        """Back to position-indexed scores from the slot state (a step where some row is not one over its
        budget, which the prefill's cut never leaves): the position path takes over from here."""
        scores, last = self.slot_state(ctx)
        mine = scores.masked_fill((ctx.positions != last) | (ctx.positions < 0), 0.0)  # changed: a new token
        by_position = torch.zeros(scores.shape[0], max(ctx.seen) + 64, device=scores.device)
        ctx.state.scores[ctx.layer] = by_position.scatter_add_(1, ctx.positions.clamp(min=0), mine)
        ctx.state.slots[ctx.layer] = None

    def device_tensors(self, ctx: LayerContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.on_device(ctx.state, ctx.positions.device)

    def on_device(self, state: H2OState, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(voter weights [B, 1] of ones, each row's recent window [B, 1]) on a layer's device, made
        once per request and device: a copy per layer and step queued a pinned transfer each."""
        if device not in state.on_device:
            recent = to_device([self.recent(b) for b in state.budgets], device)[:, None]
            state.on_device[device] = (torch.ones(len(state.budgets), 1, device=device), recent)
        return state.on_device[device]

    def steady(self, state: H2OState, layer: int, counts: list[int]) -> bool:
        """Whether the layer's next decode step repeats its last one's work on the same buffers, so that
        a CUDA graph can (evict_graphs.py): scores kept per slot, every row at its budget before the new
        token joins (the cache then writes it into the slot evicted last, and evicts one again)."""
        return state.by_slot and state.slots[layer] is not None and counts == state.budgets

    def quiet_step(self, state: H2OState, counts: list[list[int]], seen: list[int]) -> QuietStep | None:
        """The step as one graph once every layer is steady (steady(): each row one over its budget once the
        new token joins): an EvictStep."""
        if all(self.steady(state, layer, [c - 1 for c in held]) for layer, held in enumerate(counts)):
            return EvictStep(self, state)
        return None

    def steady_scores(self, state: H2OState, layer: int, queries: torch.Tensor, query_pos: torch.Tensor,
                      keys: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        """A steady step's Evict scores (decode's by_slot branch as device work only, for a graph):
        queries [B, H, 1, D], query_pos [B, 1], keys [B, H_kv, T, D] and positions [B, T] after the write."""
        return h2o_step(queries, query_pos, keys, positions, *self.steady_state(state, layer, positions), scale)

    def steady_attention(self, state: H2OState, layer: int, queries: torch.Tensor, query_pos: torch.Tensor,
                         keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                         scale: float) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
        """(attention output, a call that gives steady_scores' scores) in one pass over the slots where the
        kernels take the layer (kernels/h2o_step.py, h2o_attend_step), else None."""
        return h2o_attend_step(queries, query_pos, keys, values, positions, *self.steady_state(state, layer, positions),
                               scale)

    def steady_state(self, state: H2OState, layer: int, positions: torch.Tensor) -> tuple:
        """(slot scores, their positions at the last step, each row's recent window) for a steady step over
        positions [B, T]."""
        scores, last = state.slots[layer]
        T = positions.shape[1]
        return scores[:, :T], last[:, :T], self.on_device(state, positions.device)[1]

    def last_old(self, ctx: LayerContext) -> torch.Tensor:
        """[B, 1] each row's newest position outside the recent window at this decode step (the query
        is the newest token, seen - 1); one tensor per step and device, shared by the layers."""
        return ctx.state.shared("last_old", (ctx.seen[0], ctx.positions.device),
                                lambda: ctx.query_positions - self.device_tensors(ctx)[1])

    def accumulate(self, ctx: LayerContext, attention: torch.Tensor, slots: torch.Tensor | None = None) -> None:
        """Add attention [B, T] (over the held tokens) to the layer's scores, by original position
        (slots: the positions clamped to 0, when the caller has them)."""
        scores = ctx.state.scores[ctx.layer]
        needed = max(ctx.seen)
        if scores is None or scores.shape[1] < needed:  # room for 64 more positions: grows rarely
            grown = torch.zeros(attention.shape[0], needed + 64, device=attention.device)
            if scores is not None:
                grown[:, :scores.shape[1]] = scores
            scores = ctx.state.scores[ctx.layer] = grown
        # an empty slot (position -1) gets no attention (kernels/scores.py): adding its 0 at 0 is harmless
        scores.scatter_add_(1, ctx.positions.clamp(min=0) if slots is None else slots, attention.float())

    def evict(self, ctx: LayerContext) -> Keep | None:
        budgets = ctx.state.budgets
        if all(held <= b for held, b in zip(ctx.counts, budgets)):
            return None
        first_recent = to_device([n - self.recent(b) for n, b in zip(ctx.seen, budgets)], ctx.positions.device)
        recent = ctx.positions >= first_recent[:, None]
        scores = ctx.state.scores[ctx.layer].gather(1, ctx.positions.clamp(min=0))
        return Keep(scores.masked_fill(recent, ALWAYS), [min(held, b) for held, b in zip(ctx.counts, budgets)])


class EvictStep(QuietStep):
    """H2O's steady decode step as part of the whole-step graph (step_graphs.py): each layer's token goes into
    the slot it evicted at the step before, and its slot scores pick the next one (steady_scores)."""

    evicts = True

    def __init__(self, policy: H2OPolicy, state: H2OState):
        self.policy, self.state = policy, state
        self.binding = tuple(t for held in state.slots for t in held)

    def scores(self, layer: int, queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
               positions: torch.Tensor, scale: float) -> torch.Tensor:
        return self.policy.steady_scores(self.state, layer, queries, query_pos, keys, positions, scale)

    def attend_and_score(self, layer: int, queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                         values: torch.Tensor, positions: torch.Tensor,
                         scale: float) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
        return self.policy.steady_attention(self.state, layer, queries, query_pos, keys, values, positions, scale)
