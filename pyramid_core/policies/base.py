"""The policy contract: a policy says which tokens matter and how many each layer keeps.

A policy is a small dataclass (docs/policies.md). After each layer runs, the engine hands it a
`LayerContext`; the policy answers with a `Keep` (scores over the layer's newest tokens, and how many of
them each row keeps), a `Window` (sinks and the newest tokens, by order alone), an `Evict` (one token
per row, the lowest-scoring) or None to keep everything. The cache does the keeping: the top-k, the
compaction and every slot index (cache.py). The policy never touches the cache or the engine.

What a policy remembers within one request lives in the typed state it declares (`new_state`); the
engine makes one per request and passes it back in every context, so one policy object serves many
requests at once.

A policy may also replace KV groups with recurrent modules (RecurFormer): `recurrent_modules(lm)`
returns {layer: {kv_group: module}}; the engine runs those groups through the modules and caches no
keys or values for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from functools import cached_property
from typing import Callable, ClassVar

import torch

from ..kernels.scores import recent_attention_scores

# Scores that rank above every attention score: what a policy must keep whatever the budget.
ALWAYS = float("inf")


@dataclass(frozen=True)
class Keep:
    """Keep, in each row, the counts[b] best-scoring of its newest n tokens; drop the rest of them.

    scores: [B, n] float over the layer's newest n tokens (n <= the context's T columns, in the same
            order; ALWAYS for a token that must stay). Older tokens are all kept. Equal scores keep the
            older token.
    counts: per row, how many of its scored tokens stay (at most the tokens it holds among them).
    stream: prefill only. True: the dropped tokens leave the hidden states, so deeper layers never see
            them, and this layer's cache keeps everything (PyramidInfer). False: the layer's cache
            drops them (cache-only eviction).
    """

    scores: torch.Tensor
    counts: list[int]
    stream: bool = False


@dataclass(frozen=True)
class Window:
    """Keep, in each row, its first `sinks` tokens and its newest counts[b] - sinks; drop the rest.

    An answer by order alone, with no scores to compute: the cache keeps it as a ring, overwriting the
    oldest non-sink slot with the next token (cache.py), so a sliding window costs no work per step.
    Decode only (a prefill answer may need to stream, which a Window never does).
    """

    sinks: int
    counts: list[int]
    stream: bool = False


@dataclass(frozen=True)
class Evict:
    """Drop, in each row, its one lowest-scoring token; the row's next token takes its slot.

    scores: [B, T] over the context's columns (ALWAYS for a token that must stay; each row holds at least
            one that may go). Equal scores: the newer token goes (a Keep keeps the older one too).
    A decode answer for a policy that drops one token per row per step (H2O once full): the cache frees
    the slot and writes the next token into it (cache.py), with no top-k, no compaction and no host wait.
    """

    scores: torch.Tensor
    stream: bool = False


@dataclass
class PolicyState:
    """A policy's per-request memory (none here). Policies that remember subclass it.

    new_tokens: the request's new tokens where the engine plans for them (a reserved KV), else None; a
    policy may size its own buffers for the whole request with it.
    """

    new_tokens: int | None = field(default=None, kw_only=True)  # kw_only: subclasses add fields without defaults

    def resolved(self) -> dict:
        """Settings solved for this request (e.g. a decay from a KV budget), shown in the trace."""
        return {}

    def shared(self, name: str, key, build):
        """build() once per key, kept in this state's field `name` as (key, value): what the layers of
        one decode step share (a mask, weights copied to the device) is made once, not once a layer."""
        held = getattr(self, name)
        if held is None or held[0] != key:
            held = (key, build())
            setattr(self, name, held)
        return held[1]


@dataclass(frozen=True)
class LayerContext:
    """What a policy sees of one layer after it ran.

    The [B, T] tensors list the layer's slots: each row's held tokens in order, newest in the last column,
    a row that holds fewer than T with empty columns (position -1) in front; except after a `Window` or
    an `Evict`, whose next tokens take freed slots, so that the columns are no longer in position order
    (read positions, not column indices, where order matters; a Keep that scores every column follows
    the columns as they are: the cache restores order and reorders the scores with it).

    layer, num_layers, phase: which layer of how many, "prefill" or "decode".
    positions:  [B, T] original position of each held token (-1 = empty); read on first use.
    counts:     tokens each row holds in the layer.
    seen:       tokens each row has seen so far (its real prompt length plus generated tokens).
    state:      the policy's per-request state (what its `new_state` made).
    queries:    [B, H, t, D] this step's queries of the layer (after RoPE), query_positions [B, t].
    keys, scale: the layer's held keys [B, H_kv, T, D] (read on first use) and its softmax scale, for
                `attention_scores`.
    held:       how the engine reads (keys, positions) of the layer; policies read `keys`, `positions`.
    """

    layer: int
    num_layers: int
    phase: str
    counts: list[int]
    seen: list[int]
    state: PolicyState
    queries: torch.Tensor
    query_positions: torch.Tensor
    scale: float
    held: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (keys, positions), read on first use

    # Read lazily: a decode step that answers None from host counts alone (most of PyramidInfer's)
    # then costs no views of the layer, which at batch 1 on a GPU are launch-bound host work.
    @cached_property
    def keys(self) -> torch.Tensor:
        return self._held[0]

    @cached_property
    def positions(self) -> torch.Tensor:
        return self._held[1]

    @cached_property
    def _held(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.held()

    def attention_scores(self, queries: torch.Tensor, query_positions: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
        """[B, T] float32: each held token's attention from queries [B, H, W, D], averaged over heads
        and weighted per query by weights [B, W] (kernels/scores.py). Never an L x L matrix."""
        return recent_attention_scores(queries, query_positions, self.keys, self.positions, weights, self.scale)


class QuietStep:
    """A decode step at which a policy's answers need none of the step's tensors, split into what the host
    does around it and what the device does inside it, so that the whole step can run as one CUDA graph
    (step_graphs.py). This one does nothing: the step of a policy that is never asked at decode."""

    binding: tuple = ()  # the tensors the step writes for the policy: another tensor in any place means a new graph
    answers: tuple = ()  # (layer, answer) the engine applies after the step: answers the host carries out
    # every layer writes its token into the slot it evicted at the step before and, inside the step, picks
    # the next one by scores() (H2O's steady step); False: the token goes into the layer's next free slot
    evicts: bool = False

    def prepare(self) -> None:
        """Host, before the step: load the inputs the step reads for the policy (finish()'s index)."""

    def newest_to(self, layer: int) -> tuple | None:
        """Where the layer's attention writes its heads' logits over the newest slots and their log-sum-exp
        ((logits [B, H, N], lse [B, H]) float32, attention.py newest=), or None: Policy.newest_to inside the
        step's graph."""
        return None

    def finish(self) -> None:
        """Device work inside the step's graph after its last layer (PyramidInfer: the heads' rows averaged
        into its voters' ring)."""

    def done(self, positions: torch.Tensor) -> None:
        """Host, after the step: the bookkeeping of what the step wrote for the policy; positions [B, 1], the
        step's, in a tensor that no later step writes into (a policy may keep it)."""

    def scores(self, layer: int, queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
               positions: torch.Tensor, scale: float) -> torch.Tensor:
        """Device work inside an evicting step: [B, T] scores of the layer's slots after the write, the
        lowest of which goes next (evicts only)."""
        raise NotImplementedError

    def attend_and_score(self, layer: int, queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                         values: torch.Tensor, positions: torch.Tensor,
                         scale: float) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
        """Device work inside an evicting step: (the layer's attention output, a call that gives scores()
        from what the pass saw) in one pass over the slots, or None: the engine attends and asks scores()
        apart (evicts only). The engine makes the call where the pick runs (a side stream in a step graph)."""
        return None


def check_share(knob: str, value: float) -> None:
    """A share of the full cache must lie in (0, 1]; a token count has its own knob."""
    if not 0 < value <= 1:
        hint = "; for a number of tokens use kv_tokens (--kv-tokens)" if value > 1 else ""
        raise ValueError(f"{knob} must be a share of the full cache in (0, 1], got {value}{hint}")


class Policy:
    """Base policy: keeps everything. Subclasses override what they change.

    A policy that a KV budget can steer (budget.py) names the knob the solver turns in `budget_knob`,
    lists other knobs the solver may change, in order, in `budget_fallbacks`, and plans the tokens it
    will hold from the lengths alone (`planned_kv_tokens`). The solver records what it was asked and
    what it planned in `budget_plan`, which `describe()` reports.
    """

    name = "baseline"
    budget_knob: ClassVar[str | None] = None
    budget_fallbacks: ClassVar[tuple[dict, ...]] = ({},)
    budget_plan: dict | None = None  # set by budget.solve on the policy it returns

    def new_state(self, num_layers: int) -> PolicyState:
        """A fresh per-request state."""
        return PolicyState()

    def prefill(self, ctx: LayerContext) -> Keep | None:
        return None

    def decode(self, ctx: LayerContext) -> Keep | None:
        return None

    def newest_to(self, state: PolicyState, layer: int, seen: list[int]) -> tuple | None:
        """Where an eager decode step's attention writes the layer's heads' logits over its newest slots and
        their log-sum-exp ((logits [B, H, N], lse [B, H]) float32, attention.py newest=), for decode() to
        read; None: nowhere (a policy that keeps no attention rows). seen: tokens seen per row, the step's
        included."""
        return None

    @property
    def compresses_at_decode(self) -> bool:
        """Whether decode() may answer anything but None: the engine asks only a policy that does, so a
        policy that acts at the prefill alone (the baseline, SnapKV) costs a decode step nothing."""
        return type(self).decode is not Policy.decode

    @property
    def keeps_the_prompt(self) -> bool:
        """Whether every layer holds every prompt token after the prefill (prefill() never answers): the
        cache can then size its layers before the prefill runs (a KV reserve, cache.py `presize`)."""
        return type(self).prefill is Policy.prefill

    def planned_growth(self, prompt_tokens: list[int], new_tokens: int, num_layers: int) -> list[int]:
        """Per layer, the most tokens a row of these prompt lengths gains after the prefill over
        new_tokens steps, what a KV reserve adds (cache.py): every new token, unless the policy knows
        that its decode-time cuts keep the layer below that."""
        return [new_tokens] * num_layers

    def quiet_step(self, state: PolicyState, counts: list[list[int]], seen: list[int]) -> QuietStep | None:
        """The coming decode step as a QuietStep when decode() will answer nothing that needs the step's
        tensors at any layer, else None (the step runs layer by layer). counts [L][B]: each layer's tokens
        per row as decode() will see them (the new token included); seen: tokens seen per row, the new one
        included."""
        return None if self.compresses_at_decode else QuietStep()

    def recurrent_modules(self, lm) -> dict:
        """{layer: {kv_group: module}} of KV groups this policy runs as recurrences (none here)."""
        return {}

    def planned_kv_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[int]:
        """Tokens held over all layers after the prefill and after each of the new_tokens - 1 decode
        steps of a one-prompt generation, computed from the lengths alone (budget.py)."""
        raise NotImplementedError(f"mode {self.name!r} takes no KV budget")

    def describe(self) -> dict:
        """The policy's name and settings (and the KV budget it was solved for), for traces and benchmark metadata."""
        settings = asdict(self) if is_dataclass(self) else {}
        return {"name": self.name, **settings, **(self.budget_plan or {})}
