"""A layer's whole decode step as one CUDA graph, once an evicting policy (H2O) has filled its cache.

graphs.py captures the stretches of a layer whose shapes never change and leaves the middle eager: the
cache's write, attention over the slots the layer holds and the policy's bookkeeping. Under H2O that
middle, a dozen kernels with their Python around them, took ~390 us of the host a layer on an H200
machine where one eager op takes ~10 (benchmarks/h2o_host_cost.json): H2O decoded at 0.36-0.63x the
baseline, bound by the host. But once a layer's cache is full its middle repeats exactly, step after
step, on the same buffers: the new token goes into the slot evicted at the last step, attention reads the
same T slots, the slot scores are updated in place and one slot per row is evicted again. That is what
this module captures, per request and layer, and replays:

    write the token into slot[b] -> attention over the T slots -> policy.steady_scores -> slot = argmin

What stays on the host is bookkeeping that the step does not change (the cache's counts: one in, one out).
The slot to write into lives in a static buffer that the graph reads first and overwrites last, so the
cache's `evicted` is that buffer from the first graphed step on. A graph binds the request's buffers (its
cache, its slot scores) and the decode graphs' (q, k, v, the positions, the attention output); when any of
them is another tensor, it is captured again. The capture's warm-up call is the step itself (graphs.Replay),
so a step that captures does not replay.

On a CPU, Replay calls the step function itself, so the tests run this path without a GPU and check it
against the eager one (tests/test_evict_graphs.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .attention import attention
from .graphs import DecodeGraphs, Replay, load, request_replay, same_objects
from .layers import attention_scale
from .side_stream import SideStream


# On unless PYRAMID_EVICT_GRAPHS=0 in the environment of a new process (benchmarks pair the two paths); named
# FUSED_STEP as the other decode-step switches are (tests/test_fused_switches.py)
FUSED_STEP = os.environ.get("PYRAMID_EVICT_GRAPHS", "1") != "0"


@dataclass
class EvictGraph:
    replay: Replay
    slot: torch.Tensor  # [B] the slot the next token goes into: read first, overwritten last
    binding: tuple      # what the graph's kernels read and write; another tensor in any place: recapture


def steady(req, stages, idx: int) -> bool:
    """Whether layer idx's decode step can run as its graph: decode graphs in use, and the policy says the
    layer's step repeats (policies/h2o.py, H2OPolicy.steady) on a cache that only swaps one slot a row."""
    layer = req.cache[idx]
    return (FUSED_STEP and isinstance(stages, DecodeGraphs) and hasattr(req.policy, "steady_scores")
            and layer.evicted is not None and not layer.free and not layer.has_holes
            and layer.keys.shape[1] > 0 and req.policy.steady(req.state, idx, layer.counts))


def steady_layer(req, stages: DecodeGraphs, idx: int, h: torch.Tensor, pos: torch.Tensor, rope,
                 states: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer idx's decode step (steady(...) is true): the pre graph, this layer's evict graph, the post
    graph. Returns (h, q) as layers.layer_forward does; the policy has nothing more to answer."""
    x, q, k, v = stages.pre(idx, h, rope)
    stages.load_pos(pos)
    layer, graph, binding = req.cache[idx], req.evict_graphs.get(idx), bound(req, stages, idx)
    if graph is not None and same(graph.binding, binding):
        load(graph.slot, layer.evicted)
        graph.replay()
    else:
        req.evict_graphs[idx] = graph = capture(req, stages, idx, q, k, v, binding)  # its warm-up ran this step
    layer.evicted, layer.ordered, layer.ring = graph.slot, False, None
    return stages.after_attention(idx, h, stages.attn_out[idx], x, pos, states, "decode"), q


def bound(req, stages: DecodeGraphs, idx: int) -> tuple[tuple, tuple]:
    """What layer idx's graph reads and writes: (objects: the decode graphs, the cache's buffers, the
    policy's slot state; values: the slots in use, the kernel choice)."""
    layer, (scores, last) = req.cache[idx], req.state.slots[idx]
    return (stages, layer.keys, layer.values, layer.positions, scores, last), (layer.length, req.decode_kernel)


def same(old: tuple[tuple, tuple], new: tuple[tuple, tuple]) -> bool:
    return same_objects(old[0], new[0]) and old[1] == new[1]


def capture(req, stages: DecodeGraphs, idx: int, q, k, v, binding: tuple) -> EvictGraph:
    layer, pos, device = req.cache[idx], stages.pos, stages.pos.device
    slot = layer.evicted.clone()
    out, T = stages.attn_out[idx], layer.length
    scale, window = attention_scale(req.parts, idx), req.parts.windows[idx]

    def scores(queries, query_pos, keys, positions):
        return req.policy.steady_scores(req.state, idx, queries, query_pos, keys, positions, scale)

    def both(queries, query_pos, keys, values, positions):
        return req.policy.steady_attention(req.state, idx, queries, query_pos, keys, values, positions, scale)

    def step():
        layer.write_slots(slot, k, v, pos)
        out.copy_(attend_and_pick(layer, slot, q, pos, T, scale, window, req.decode_kernel, scores, both))
        return ()

    return EvictGraph(request_replay(req, step, device), slot, binding)


def attend_and_pick(layer, slot: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, T: int, scale: float,
                    window: int | None, decode_kernel: bool, scores, both=None,
                    side: SideStream | None = None) -> torch.Tensor:
    """A full layer's steady step after the token's write: attention over its T slots, then the next slot
    each row evicts, into `slot` (device work only). scores(q, pos, keys, positions) -> [B, T]; both(q, pos,
    keys, values, positions) -> (attention, a call that gives the scores from what its pass saw) in one pass,
    or None (then attention and scores apart; only asked where the decode kernel may run and no window masks
    the attention, which the scores ignore). side: score and pick there (nothing after reads them until the
    next step), else in line."""
    keys, values, k_pos = layer.keys[:, :, :T], layer.values[:, :, :T], layer.positions[:, :T]
    fused = both(q, pos, keys, values, k_pos) if both is not None and decode_kernel and window is None else None
    if fused is None:
        out = attention(q, keys, values, pos, k_pos, scale=scale, holes=False, window=window, causal_square=False,
                        decode_kernel=decode_kernel, any_batch=True)
        fused = out, lambda: scores(q, pos, keys, k_pos)
    out, scored = fused

    def pick():
        layer.lowest_slot(scored(), out=slot)

    if side is not None:
        side.run(pick)
    else:
        pick()
    return out
