"""PyramidInfer (Yang et al., Findings of ACL 2024, arXiv 2405.12532): fewer KV in deeper layers.

Prefill (paper Algorithm 1; official code `LlamaModel.forward`): after layer l, each row's context
tokens (all but its recent window, the last 1 + R tokens with R = int(recent_ratio * n)) are scored by
the recent window's head-averaged attention, weighted linearly from 1.0 (oldest voter) to
distance_weight (newest). The top int(C * r(l)) context tokens, the first sink_len tokens and the
recent window go on to layer l+1; the rest are dropped from the hidden states, so deeper layers compute
and cache fewer keys and values. A layer whose context is at or under min_context_length (or would keep
no more than that) is not compressed; only every layer_interval-th layer compresses.

Decode: once chunk_length tokens have passed out of a layer's recent window since that layer was last
compressed, those chunk_length slots are cut to max(1, int(chunk_length * gen_compress_ratio *
r_gen(l))) by the same score.

A KV budget (budget.py) sets the decay d, and where d alone cannot reach it narrows the recent window and
the minimum context (BUDGET_FALLBACKS); `planned_kv_tokens` runs prefill's and decode's counting on the
lengths alone, so the solver knows the share a generation will hold, decode chunks included.

Where we depart from the official code (mutonix/pyramidinfer @ 61ac641), and why (docs/pyramidinfer.md):
- "since last compressed" is per layer, as in the legacy 4.31 file; the 4.46 port compares with the
  global token count, which collapses deep layers to the recent window.
- "linear" is linear, from 1 at layer 0 to d at the last layer; the official branch chain turns it
  into the constant schedule. Defaults are the shipped 7B config, not the code's fallbacks.
- Pads are never scored, kept or counted as sinks; sinks are protected at decode time too.
- The decode trigger counts tokens past the marker outside the whole window (1 + R), so a chunk holds
  generated tokens only; the official test (len - R - marker) also cuts the prompt's last token.
- Scores come from the recent queries and the layer's keys (kernels/scores.py), never from a full
  attention matrix. At decode time, as in the official code, each voter is the attention row it cast when
  it was decoded (voter_rows.py: head-averaged, over the newest window + chunk slots, which the decode
  kernel writes in the pass that attends), so a cut computes no attention at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..kernels.scores import newest_probs_torch
from ..transfer import to_device
from .base import ALWAYS, Keep, LayerContext, Policy, PolicyState, QuietStep
from .voter_rows import SLACK, VoterRows

SCHEDULES = ("cosine", "linear", "constant")

PRESETS = {
    # the shipped configs of the official repository (configs/llama2_7b.json, llama2_13b.json)
    "paper-7b": {},
    "paper-13b": {"prefill_decay_ratio": 0.8, "layer_interval": 2},
    # about 45% of the full KV over a 512 + 256 generation, as in the paper's Table 1. With the shipped
    # recent_ratio 0.2 and min_context_length 64 no decay gets below 52% at 512 tokens (40 layers), so
    # this preset narrows both, and its kv_budget (a request's budget, budget.py, not a knob) solves
    # the decay for 45%; the shipped decode ratio (0.9) would let the share climb to 51% by token 256,
    # so decode chunks keep 0.4 x r_gen(l) of their tokens.
    "table1-45": {"recent_ratio": 0.1, "min_context_length": 32, "kv_budget": 0.45, "gen_compress_ratio": 0.4},
}

# Knobs a KV budget may also change (budget.py), in order, when the decay alone cannot reach it: with
# the shipped recent window (20%) and min_context_length (64), the cosine schedule keeps at least ~58% of
# a 1k prompt whatever the decay on the embedded model's 16 layers (~62% on 12).
BUDGET_FALLBACKS = (
    {},
    {"recent_ratio": 0.1, "min_context_length": 32},
    {"recent_ratio": 0.1, "min_context_length": 32, "prefill_decay_strategy": "linear"},
    {"recent_ratio": 0.1, "min_context_length": 32, "prefill_decay_strategy": "constant"},
)


# Sinks rank above every attention score and below the recent window (ALWAYS): the window always
# survives, and the sinks come first among the context tokens a layer keeps.
SINK = torch.finfo(torch.float32).max


def layer_ratio(layer: int, num_layers: int, floor: float, schedule: str) -> float:
    """r(l): the share of its context layer l passes on; 1 at layer 0, falling to `floor` at the top."""
    depth = layer / num_layers
    if schedule == "cosine":
        return (1 - floor) * (math.cos(math.pi * depth) + 1) / 2 + floor
    if schedule == "linear":
        return 1 - (1 - floor) * depth
    if schedule == "constant":
        return floor
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@dataclass
class PyramidState(PolicyState):
    """What PyramidInfer remembers within one request.

    markers:  per layer, per row: the tokens held outside the window when the layer was last
              compressed ("since the last compression" is per layer).
    voters:   every layer's voters, the attention rows of its most recent queries (voter_rows.py).
    windows:  (seen tokens of row 0, each row's voter window) of the current decode step.
    weights, chunk, shifts: the voter weights and outside-chunk mask last copied to the device and the rows'
              shifts made there, reused by the layers that compress at the same step with the same windows
              (a copy per layer cost a pinned transfer and several kernels each).
    """

    num_layers: int
    markers: list[list[int] | None] = field(default_factory=list)
    voters: VoterRows | None = None
    windows: tuple[int, list[int]] | None = None
    weights: tuple[tuple, torch.Tensor] | None = None  # (key, voter weights) of the current windows
    chunk: tuple[tuple, torch.Tensor] | None = None    # (key, outside-chunk mask) of the current cut
    shifts: tuple[tuple, torch.Tensor] | None = None   # (key, where the voters' rows read the newest slots)
    no_cut_before: int = 0  # row 0's seen tokens below which no layer can cut (quiet_step's bound)

    def __post_init__(self):
        self.markers = self.markers or [None] * self.num_layers


@dataclass
class PyramidPolicy(Policy):
    """PyramidInfer. Defaults are the official repository's configs/llama2_7b.json."""

    name = "pyramid"
    recent_ratio: float = field(default=0.2, metadata={"help": "recent window (voters) as a share of the length"})
    prefill_decay_ratio: float = field(default=0.9, metadata={"help": "d: the deepest layer's keep ratio"})
    prefill_decay_strategy: str = field(default="cosine", metadata={"help": "cosine | linear | constant"})
    min_context_length: int = field(default=64, metadata={"help": "layers with no more context are not compressed"})
    layer_interval: int = field(default=1, metadata={"help": "compress every k-th layer"})
    sink_len: int = field(default=4, metadata={"help": "first tokens always kept"})
    distance_weight: float = field(default=1.2, metadata={"help": "weight of the newest voter (oldest: 1.0)"})
    gen_decay_ratio: float = field(default=0.1, metadata={"help": "decode-time schedule floor"})
    gen_decay_strategy: str = field(default="cosine", metadata={"help": "cosine | linear | constant"})
    gen_compress_ratio: float = field(default=0.9, metadata={"help": "extra factor on each decode chunk"})
    chunk_length: int = field(default=16, metadata={"help": "decode chunk size and trigger"})

    budget_knob = "prefill_decay_ratio"  # a KV budget solves d (budget.py)
    budget_fallbacks = BUDGET_FALLBACKS
    presets = PRESETS

    def __post_init__(self):
        for knob in ("recent_ratio", "prefill_decay_ratio", "gen_decay_ratio", "gen_compress_ratio"):
            value = getattr(self, knob)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{knob} must be in [0, 1], got {value}")
        for knob in ("prefill_decay_strategy", "gen_decay_strategy"):
            if getattr(self, knob) not in SCHEDULES:
                raise ValueError(f"{knob} must be one of {SCHEDULES}, got {getattr(self, knob)!r}")
        for knob, low in (("min_context_length", 0), ("layer_interval", 1), ("sink_len", 0), ("chunk_length", 1)):
            if int(getattr(self, knob)) != getattr(self, knob) or getattr(self, knob) < low:
                raise ValueError(f"{knob} must be an integer >= {low}, got {getattr(self, knob)}")
        if self.distance_weight <= 0:
            raise ValueError(f"distance_weight must be > 0, got {self.distance_weight}")

    @classmethod
    def configure(cls, knobs: dict, preset: str | None = None) -> "PyramidPolicy":
        """Knobs on top of a preset (its kv_budget is the request's, not a knob: registry.preset_budget)."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset_knobs = {k: v for k, v in PRESETS.get(preset, {}).items() if k != "kv_budget"}
        return cls(**{**preset_knobs, **knobs})

    # ------------------------------------------------------------------ schedule arithmetic

    def window(self, seen: int) -> int:
        """Voters: the last 1 + R tokens."""
        return min(seen, 1 + int(self.recent_ratio * seen))

    def prefill_keep_count(self, layer: int, num_layers: int, held: int, seen: int, decay: float) -> int:
        """How many of its `held` tokens layer `layer` passes on, for a prompt of `seen` tokens."""
        ratio = layer_ratio(layer, num_layers, decay, self.prefill_decay_strategy)
        if layer % self.layer_interval != 0 or ratio >= 1.0:
            return held
        window = self.window(seen)
        context = held - window
        min_context = min(self.min_context_length, seen - window)
        kept = int(context * ratio)
        if context <= min_context or kept <= min_context:
            return held
        return kept + window

    def prefill_counts(self, seen: int, num_layers: int, decay: float) -> list[int]:
        """Tokens each layer caches after the prefill of a `seen`-token prompt (layer l holds what entered it)."""
        counts, held = [], seen
        for layer in range(num_layers):
            counts.append(held)
            held = self.prefill_keep_count(layer, num_layers, held, seen, decay)
        return counts

    def keep_in_chunk(self, layer: int, num_layers: int) -> int:
        """Tokens a decode chunk of layer `layer` keeps."""
        ratio = layer_ratio(layer, num_layers, self.gen_decay_ratio, self.gen_decay_strategy)
        return max(1, int(self.chunk_length * self.gen_compress_ratio * ratio))

    def chunk_cut(self, layer: int, num_layers: int, held: int, window: int, marker: int) -> tuple[int, int] | None:
        """(chunk size, tokens it keeps) when a layer holding `held` tokens compresses at this decode
        step, None when it does not: once chunk_length tokens have passed out of the window since the
        marker. The chunk is the chunk_length tokens just older than the window, sinks excluded."""
        if not self.chunk_due(held, window, marker):
            return None
        return self.chunk_of(held, window, self.keep_in_chunk(layer, num_layers))

    def chunk_due(self, held: int, window: int, marker: int) -> bool:
        """Whether chunk_length tokens have passed out of the window since the marker: the layer cuts."""
        return held - window - marker >= self.chunk_length

    def chunk_of(self, held: int, window: int, keep: int) -> tuple[int, int]:
        """chunk_cut's answer where it cuts, for a layer whose chunks keep `keep` tokens."""
        size = max(0, min(window + self.chunk_length, held - self.sink_len) - window)
        return size, min(size, keep)

    def row_cuts(self, layer: int, num_layers: int, counts: list[int], windows: list[int],
                 markers: list[int]) -> list[tuple[int, int] | None]:
        """chunk_cut for each row, the layer's keep count worked out once: its cosine, once a row, took most of
        the ~0.2 ms a layer that a step's cuts spent on the host at Table 1's 160 rows."""
        keep = self.keep_in_chunk(layer, num_layers)
        return [self.chunk_of(held, w, keep) if self.chunk_due(held, w, m) else None
                for held, w, m in zip(counts, windows, markers)]

    def planned_kv_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[int]:
        """Tokens held over all layers after the prefill and after each decode step: prefill() and
        decode()'s counting alone, run on one prompt's lengths (budget.py)."""
        return [sum(held) for held in self.planned_layer_tokens(prompt_tokens, new_tokens, num_layers)]

    def planned_growth(self, prompt_tokens: list[int], new_tokens: int, num_layers: int) -> list[int]:
        """Per layer, the most tokens a row gains over what its prefill left: the decode-time cuts keep a
        layer far below its prefill's tokens plus every new one (Table 1's reserve, cache.py). A step
        appends its token before the layer's cut, so the peak is one above what a step ended with."""
        growth = [0] * num_layers
        for seen in set(prompt_tokens):
            plan = self.planned_layer_tokens(seen, new_tokens, num_layers)
            for layer in range(num_layers):  # plan[:-1]: every entry but the last is followed by an append
                peak = max(held[layer] + 1 for held in plan[:-1]) if len(plan) > 1 else plan[0][layer]
                growth[layer] = max(growth[layer], peak - plan[0][layer])
        return growth

    def planned_layer_tokens(self, prompt_tokens: int, new_tokens: int, num_layers: int) -> list[list[int]]:
        """Each layer's tokens after the prefill and after each of the new_tokens - 1 decode steps."""
        held = self.prefill_counts(prompt_tokens, num_layers, self.prefill_decay_ratio)
        markers, plan = list(held), [list(held)]
        for step in range(1, new_tokens):
            window = self.window(prompt_tokens + step)
            for layer in range(num_layers):
                held[layer] += 1
                cut = self.chunk_cut(layer, num_layers, held[layer], window, markers[layer])
                if cut is not None:
                    held[layer] += cut[1] - cut[0]
                    markers[layer] = held[layer] - window
            plan.append(list(held))
        return plan

    def quiet_step(self, state: PyramidState, counts: list[list[int]], seen: list[int]) -> QuietStep | None:
        """A step at which no layer cuts (decode()'s chunk_cut on the counts it will see): only the voters'
        rows are left to write, in place (VoterStep). A window that has outgrown its ring needs the eager
        step, which grows it (newest_to)."""
        if state.voters is None or not state.voters.fits(self.window(max(seen))):
            return None
        if seen[0] < state.no_cut_before:
            return VoterStep(state, seen[0])
        windows = [self.window(n) for n in seen]
        # chunk_due's trigger, held - window - marker >= chunk_length, gains at most 1 a step (held + 1,
        # the window + 0 or 1): the smallest distance to it is a number of steps no layer can cut in
        distance = min((self.chunk_length - (h - w - m) for held, markers in zip(counts, state.markers)
                        if markers is not None for h, w, m in zip(held, windows, markers)), default=1)
        if distance <= 0:
            return None
        state.no_cut_before = seen[0] + distance
        return VoterStep(state, seen[0])

    def new_state(self, num_layers: int) -> PyramidState:
        return PyramidState(num_layers)

    def scores(self, ctx: LayerContext, queries: torch.Tensor, q_pos: torch.Tensor, windows: list[int]) -> torch.Tensor:
        """[B, T]: each held token's head-averaged attention from the row's last windows[b] queries (in
        order, the prefill's), weighted linearly from 1.0 (oldest voter) to distance_weight (newest). A
        decode cut reads its voters' ring instead (ring_weights)."""
        width = max(windows)
        return ctx.attention_scores(queries[:, :, -width:], q_pos[:, -width:],
                                    self.voter_weights(windows, ctx.keys.device, ctx.state))

    def voter_weights(self, windows: list[int], device, state: PyramidState | None = None) -> torch.Tensor:
        """[B, max(windows)] linear weights of each row's voters, 0 before its window. Every layer that
        compresses at a decode step uses the same ones: built and copied to the device once per step."""
        def build():
            width = max(windows)
            weights = torch.zeros(len(windows), width)
            for row, w in enumerate(windows):
                if w > 0:
                    weights[row, width - w:] = torch.linspace(1.0, self.distance_weight, w)
            return to_device(weights, device)
        return build() if state is None else state.shared("weights", (tuple(windows), device), build)

    def ring_weights(self, windows: list[int], size: int, slot: int, device, state: PyramidState) -> torch.Tensor:
        """[B, size] voter_weights placed at the voters' slots in their ring (VoterRows): the oldest of the
        last `size` voters at `slot`, 0 for the slots outside each row's window. Shared by the layers that cut
        at one step."""
        def build():
            width = max(windows)
            in_order = torch.zeros(len(windows), size)
            in_order[:, size - width:] = self.voter_weights(windows, torch.device("cpu"))
            return to_device(in_order.roll(slot, dims=1), device)
        return state.shared("weights", (tuple(windows), size, slot, device), build)

    # ------------------------------------------------------------------ the two answers

    def prefill(self, ctx: LayerContext) -> Keep | None:
        state = ctx.state
        self.start_voters(ctx)
        state.markers[ctx.layer] = list(ctx.counts)
        keep_counts = [self.prefill_keep_count(ctx.layer, ctx.num_layers, held, n, self.prefill_decay_ratio)
                       for held, n in zip(ctx.counts, ctx.seen)]
        if keep_counts == ctx.counts:
            return None
        windows = [self.window(n) for n in ctx.seen]
        first_recent = to_device([n - w for n, w in zip(ctx.seen, windows)], ctx.positions.device)
        recent = ctx.positions >= first_recent[:, None]
        sinks = (ctx.positions >= 0) & (ctx.positions < self.sink_len) & ~recent
        scores = self.scores(ctx, ctx.queries, ctx.query_positions, windows)
        return Keep(scores.masked_fill(sinks, SINK).masked_fill(recent, ALWAYS), keep_counts, stream=True)

    def start_voters(self, ctx: LayerContext) -> None:
        """The prompt's last window(max seen) queries become the layer's first voters: their rows over the
        layer's newest slots, as each query saw them. The ring holds the widest window the request will
        keep where its length is planned, else SLACK more (newest_to grows it)."""
        state, width = ctx.state, self.window(max(ctx.seen))
        if state.voters is None:
            widest = None if state.new_tokens is None else self.window(max(ctx.seen) + state.new_tokens)
            size = max(width, widest) if widest else width + SLACK
            state.voters = VoterRows(ctx.num_layers, len(ctx.seen), size, self.chunk_length, width, ctx.seen[0])
        rows = newest_probs_torch(ctx.queries[:, :, -width:], ctx.query_positions[:, -width:], ctx.keys,
                                  ctx.positions, ctx.scale, state.voters.width)
        state.voters.start(ctx.layer, rows, ctx.queries.shape[1])

    def newest_to(self, state: PyramidState, layer: int, seen: list[int]) -> tuple | None:
        """Where the layer's attention at an eager decode step writes its heads' rows (VoterRows.newest_to);
        first the ring grows if the window has outgrown it."""
        voters = state.voters
        if voters is None or not voters.heads[layer]:
            return None
        width = self.window(max(seen))
        if not voters.fits(width):
            voters.grow(width + SLACK)
        return voters.newest_to(layer)

    def decode(self, ctx: LayerContext) -> Keep | None:
        state, voters = ctx.state, ctx.state.voters
        voters.step(ctx.seen[0])
        voters.take(ctx.layer)
        windows = self.step_windows(ctx)
        markers = state.markers[ctx.layer]
        cuts = self.row_cuts(ctx.layer, ctx.num_layers, ctx.counts, windows, markers)
        if all(cut is None for cut in cuts):
            return None
        sizes, kept = [c[0] if c else 0 for c in cuts], [c[1] if c else 0 for c in cuts]
        n = max(w + size for w, size in zip(windows, sizes))  # only the newest n tokens are scored
        device = ctx.queries.device
        outside = self.outside_chunk(n, windows, sizes, device, state)
        weights = self.ring_weights(windows, voters.size, (voters.slot + 1) % voters.size, device, state)
        shifts = state.shared("shifts", (n, ctx.seen[0], voters.size, device),
                              lambda: voters.shifts(n, ctx.seen[0], device))
        scores = voters.scores(ctx.layer, weights, shifts).masked_fill(outside, ALWAYS)
        for row, cut in enumerate(cuts):
            if cut is not None:  # "compressed up to here", per layer
                markers[row] = ctx.counts[row] - sizes[row] + kept[row] - windows[row]
        return Keep(scores, [min(held, n) - size + k for held, size, k in zip(ctx.counts, sizes, kept)])

    def outside_chunk(self, n: int, windows: list[int], sizes: list[int], device,
                      state: PyramidState) -> torch.Tensor:
        """[B, n] bool over the newest n slots: True outside each row's chunk (the sizes[b] slots just
        older than its window), the slots a cut keeps whatever their score. Built on the host and copied
        once, already negated: the layers cutting at one step share it and launch nothing for it."""
        def build():
            age = torch.arange(n - 1, -1, -1)[None, :]  # 0: a row's newest token
            start, size = torch.tensor(windows)[:, None], torch.tensor(sizes)[:, None]
            return to_device((age < start) | (age >= start + size), device)
        return state.shared("chunk", (n, tuple(windows), tuple(sizes), device), build)

    def step_windows(self, ctx: LayerContext) -> list[int]:
        """Each row's voter window, computed once per decode step rather than once per layer."""
        state = ctx.state
        if state.windows is None or state.windows[0] != ctx.seen[0]:
            state.windows = (ctx.seen[0], [self.window(n) for n in ctx.seen])
        return state.windows[1]


class VoterStep(QuietStep):
    """PyramidInfer's decode step where nothing is cut: the decode kernel writes each layer's heads' logits
    over the newest slots, and one launch inside the step's graph averages them into the voters' ring at the
    slot the host loads before it (decode() does the same layer by layer)."""

    def __init__(self, state: PyramidState, seen: int):
        self.voters, self.seen = state.voters, seen
        self.binding = self.voters.binding()

    def prepare(self) -> None:
        self.voters.step(self.seen)

    def newest_to(self, layer: int) -> tuple | None:
        return self.voters.newest_to(layer) if self.voters.heads[layer] else None

    def finish(self) -> None:
        self.voters.take_all()
