"""A whole decode step as one CUDA graph, for a request whose KV is reserved, at a step where its policy's
answers need none of the step's tensors on the host: every step of the baseline, SnapKV (after its prefill),
RecurFormer and streaming (a window the cache carries out on the host after the step), PyramidInfer's steps
between its cuts, and H2O's once every layer is full (each row's token goes into the slot it evicted at the
step before, and the next eviction is picked inside the graph, as evict_graphs.py does a layer at a time).

graphs.py captures each layer's fixed-shape stretches and leaves the middle eager: the cache's append
and attention over the slots the layer holds, whose count grows every step. That middle, with the Python
around it, is most of a batch-1 step: a layer of the Llama-2-7B shape spent ~160-230 us of the host's
time on two graph replays, the append and the attention, about what the whole step took a layer on an
H200 (benchmarks/modes/README.md), while its weights need ~70 us of memory traffic. Under a reserve
(cache.py) nothing about a layer's buffers changes from step to step: the new token goes into slot
`length` of the same buffers (an index the host loads into the graph each step), and attention can read
every reserved slot, the ones not yet written masked by their empty positions (-1). Then the step has no
shape that changes, and all of it is captured once per request and replayed:

    embed -> per layer: norm, q/k/v, RoPE, write slot `length`, attention over all slots, the policy's
             quiet work (PyramidInfer: attention also writes each head's row over the newest slots; H2O:
             the pick of the slot to evict next, on a side stream while o_proj and the MLP run), the
             replaced groups' recurrences (RecurFormer: their states advanced in place; on the side stream,
             beside attention, where the layer's groups run as one stack with a joint projection), o_proj, MLP
          -> the policy's finish (PyramidInfer: every layer's rows averaged into its voters), norm, lm_head

The policy says which steps are quiet and what its part of one is (policies/base.py `QuietStep`); a step
where its answer needs the step's tensors (a PyramidInfer cut scores the voters) runs layer by layer, on the
same reserved buffers. A layer writes the new token into `LayerCache.next_slot()`: slot `length`, the
slot a streaming ring freed at the step before, or (H2O) the slot each row evicted at the step before.
What stays on the host is bookkeeping (one more slot in use, one more token a row, the policy's `done`)
and the inputs copied into the graph's buffers (tokens, positions, each layer's slot). Attention runs over
the whole reservation; on CUDA the Triton decode kernel reads only the slots in use (a count the host
loads with the slot indices) whatever the batch, and with few rows x heads it splits each one's slots over
several programs, as SDPA's flash kernel does on the per-layer path (`bench roofline` compares the two).

On a CPU, Replay calls the step function itself on the same buffers, so the tests run this path without
a GPU and compare it with the per-layer path (tests/test_step_graphs.py).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields

import torch
from torch.nn.attention import sdpa_kernel

from . import side_stream
from .attention import ATTENTION_BACKENDS, attention
from .evict_graphs import attend_and_pick
from .graphs import Replay, copy_state, load, request_replay, same_objects
from .kernels.rope_write import rope_write
from .layers import attention_scale, embed_tokens, final_logits, rope_tables
from .policies.base import QuietStep
from .transfer import copy_from_host

# On unless PYRAMID_STEP_GRAPHS=0 in the environment of a new process (benchmarks pair the two paths)
FUSED_STEP = os.environ.get("PYRAMID_STEP_GRAPHS", "1") != "0"


@dataclass
class StepGraph:
    replay: Replay
    tokens: torch.Tensor     # [B] the step's input tokens
    positions: torch.Tensor  # [B, 1] their RoPE positions
    slots: torch.Tensor      # [2L] the slot each layer writes (every row the same: LayerCache.next_slot), then
                             # each layer's slots in use after that write, which its attention reads
    logits: torch.Tensor     # [B, V] float32, overwritten by the next replay
    binding: tuple           # the tensors the graph writes; another tensor in any place: recapture
    evicted: list | None = None  # an evicting step's: per layer, [B] the slot each row writes, then evicts
    lengths: tuple = ()          # an evicting step's slots in use per layer, which its attention reads


def quiet_step(req) -> QuietStep | None:
    """This decode step as the policy's QuietStep when it can run as the request's step graph: CUDA graphs
    in use, every layer reserved with a slot left, no attention to record, and a policy whose answers this
    step need none of its tensors on the host (policies/base.py: the baseline, SnapKV, RecurFormer and
    streaming at every step, PyramidInfer between its cuts, H2O once every layer is full); no layer with an
    eviction pending, unless the step is one that evicts (H2O's: then every layer has one); else None."""
    layers = req.cache.layers
    # at most one freed slot a layer: the token fills it; more would be holes, masked only once settled
    if not (FUSED_STEP and req.graphs is not None and not req.record_attention
            and all(layer.reserved and len(layer.free) <= 1 and layer.next_slot() < layer.capacity
                    for layer in layers)):
        return None
    counts = [[c + 1 for c in layer.counts] for layer in layers]  # as decode() would see them
    quiet = req.policy.quiet_step(req.state, counts, req.seen)
    if quiet is None:
        return None
    if quiet.evicts:  # every layer full, one slot a row freed at the last step, none elsewhere
        fits = all(layer.evicted is not None and not layer.free and not layer.has_holes
                   and layer.keys.shape[1] > 0 for layer in layers)
    else:
        fits = all(layer.evicted is None for layer in layers)
    return quiet if fits else None


def run(req, tokens: torch.Tensor, quiet: QuietStep) -> torch.Tensor:
    """The decode step of tokens [B] as the request's graph (quiet_step(req) gave `quiet`): logits [B, V]."""
    graph, binding, lengths = req.step_graph, bound(req, quiet), evicting_lengths(req, quiet)
    quiet.prepare()
    if graph is not None and same_objects(graph.binding, binding) and graph.lengths == lengths \
            and (graph.evicted is not None) == quiet.evicts:
        load_inputs(graph, req, tokens)
        replay(graph.replay)
    else:
        req.step_graph = graph = capture(req, tokens, binding, quiet)  # its warm-up ran this step
    for idx, layer in enumerate(req.cache.layers):
        if quiet.evicts:  # one token in, one out: the counts stay; the next slot is the graph's pick
            layer.evicted, layer.ordered, layer.ring = graph.evicted[idx], False, None
        else:
            layer.took_next()
    quiet.done(req.positions[:, None])  # not the graph's buffer, which the next step's inputs overwrite
    for layer, answer in quiet.answers:  # host-only answers (a ring window frees a slot for the next token)
        if req.cache[layer].keys.shape[1] > 0:  # as ask_policy: a layer that caches nothing is not asked
            req.cache[layer].apply(answer)
    return graph.logits.clone()


def replay(step: Replay) -> None:
    """A CUDA graph's replay calls no SDPA, so it runs outside SDPA's backend context: entering one costs ~23 us
    of the host, a tenth of the embedded model's host work a step (benchmarks/host_step_cost.md). On a CPU the
    step runs again, eagerly, with the backends every eager step uses."""
    if step.graph is not None:
        step()
        return
    with sdpa_kernel(ATTENTION_BACKENDS):
        step()


def load_inputs(graph: StepGraph, req, tokens: torch.Tensor) -> None:
    """The step's tokens, positions, the slot each layer writes and its slots in use, into the graph's buffers."""
    load(graph.tokens, tokens)
    load(graph.positions, req.positions[:, None])
    if graph.evicted is None:
        copy_from_host(graph.slots, slot_inputs(req))
        return
    for slot, layer in zip(graph.evicted, req.cache.layers):  # the graph's own picks, unless a step
        if layer.evicted is not slot:                          # outside it evicted last
            slot.copy_(layer.evicted)


def evicting_lengths(req, quiet: QuietStep) -> tuple:
    """An evicting step's slots in use per layer (its attention reads that many); () otherwise."""
    return tuple(layer.length for layer in req.cache.layers) if quiet.evicts else ()


def slot_inputs(req) -> list[int]:
    """Each layer's slot for the step's token, then its slots in use once that is written (a ring's freed
    slot lies among them; an appended one is the next)."""
    layers = req.cache.layers
    return [layer.next_slot() for layer in layers] + [layer.length + (not layer.free) for layer in layers]


def bound(req, quiet: QuietStep) -> tuple:
    """The tensors the graph writes: every layer's cache buffers and recurrent states, the policy's."""
    buffers = [t for layer in req.cache.layers for t in (layer.keys, layer.values, layer.positions)]
    buffers += quiet.binding
    for states in req.cache.recurrent_state:
        for state in states.values():
            buffers += [state] if isinstance(state, torch.Tensor) else [getattr(state, f.name) for f in fields(state)]
    return tuple(buffers)


def reservation_attention(q, layer, positions, scale: float, window: int | None, decode_kernel: bool,
                          into: tuple | None = None, written: torch.Tensor | None = None,
                          newest: tuple | None = None):
    """Attention of one query a row over every reserved slot, the unwritten ones (position -1) masked.
    On CUDA the Triton decode kernel at any batch, told the slots in use (written, [1] on the device): it
    reads none past them, where SDPA with a mask reads them all (and, for grouped KV heads, copies them per
    query head). into: attention(into=), RecurFormer's o_proj input when its recurrences run beside
    (Beside.into); newest: attention(newest=), PyramidInfer's voter rows."""
    return attention(q, layer.keys, layer.values, positions, layer.positions, scale=scale, holes=True,
                     window=window, causal_square=False, decode_kernel=decode_kernel, any_batch=True, into=into,
                     written=written, newest=newest)


@sdpa_kernel(ATTENTION_BACKENDS)  # the capture runs the step eagerly (replay() says why the replays do not)
def capture(req, tokens: torch.Tensor, binding: tuple, quiet: QuietStep) -> StepGraph:
    parts, device, B = req.parts, tokens.device, tokens.shape[0]
    static_tokens, positions = tokens.clone(), req.positions[:, None].clone()
    slots = torch.tensor(slot_inputs(req), device=device)
    L = len(req.cache.layers)
    evicted = [layer.evicted.clone() for layer in req.cache.layers] if quiet.evicts else None
    lengths = evicting_lengths(req, quiet)
    logits = torch.empty(tokens.shape[0], parts.lm_head.weight.shape[0], dtype=torch.float32, device=device)

    def step():
        side = side_stream.SideStream(device)  # RecurFormer's stack steps and H2O's picks
        picks = side if quiet.evicts and side_stream.BESIDE else None
        h = embed_tokens(parts, static_tokens[:, None], device)
        rope = rope_tables(parts.rotary, h, positions)
        for idx, layer in enumerate(req.cache.layers):
            x, q, k, v = req.stages.pre(idx, h, None)  # RoPE comes with the slot write, in one kernel
            states = req.cache.recurrent_state[idx]
            moved = dict(states)  # RecurFormer's groups: their states move on into the same buffers
            beside = req.stages.recurrences_beside(idx, x, positions, moved, side)  # while attention runs
            out = None  # a layer whose every KV group is a recurrence attends to nothing
            scale, window = attention_scale(parts, idx), parts.windows[idx]
            if quiet.evicts:
                q = rope_write(q, k, v, rope, layer, evicted[idx], positions)
                out = attend_and_pick(layer, evicted[idx], q, positions, lengths[idx], scale, window,
                                      req.decode_kernel, functools.partial(quiet.scores, idx, scale=scale),
                                      functools.partial(quiet.attend_and_score, idx, scale=scale), picks)
            elif layer.keys.shape[1] > 0:
                q = rope_write(q, k, v, rope, layer, slots[idx].expand(B), positions)
                out = reservation_attention(q, layer, positions, scale, window, req.decode_kernel,
                                            beside and beside.into, slots[L + idx:L + idx + 1], quiet.newest_to(idx))
            h = req.stages.after_attention(idx, h, out, x, positions, moved, "decode", beside)
            for group, state in states.items():
                copy_state(state, moved[group])
        quiet.finish()
        logits.copy_(final_logits(parts, h)[:, 0])
        side.join()  # every pick is in before the step ends
        return ()

    return StepGraph(request_replay(req, step, device), static_tokens, positions, slots, logits, binding,
                     evicted, lengths)
