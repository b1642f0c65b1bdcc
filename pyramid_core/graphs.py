"""CUDA graphs for the fixed-shape parts of a decode step.

A decode step on a big model is launch-bound: every layer launches ~25 small kernels, and on an H200
at batch 128 (Llama-2-13B shape) a step took ~35 ms where its weight and KV traffic need ~12. Most of
those kernels sit in stretches whose shapes never change from step to step: before attention (norm,
q/k/v projections, RoPE) and after it (with RecurFormer, the replaced groups' recurrences: projections,
decay, RoPE, state update, read-out, ~40 kernels once per layer since a layer's groups run stacked,
recurformer/stacked.py, on CUDA a matmul and one fused kernel, recurformer/step_triton.py; their merge
with the attention heads' output; then o_proj, residual, norm, MLP, residual). Those two stretches of
every layer are captured once per batch size as CUDA graphs and replayed, one launch each. What changes shape every
step stays eager between them: appending to the cache, attention over the slots a layer holds (a
different count per layer with PyramidInfer) and the policy's bookkeeping. This is the "piecewise" use
of CUDA graphs that vLLM makes, without a compiler.

A graph reads and writes fixed buffers, so inputs are copied into `DecodeGraphs`'s static tensors and
its outputs are overwritten by the next replay: they are valid until the same layer runs again. A
recurrent state belongs to its request; it moves into the graph's state buffer at the request's first
replay and stays there, the request's state dict pointing at the buffer, until another request needs
the buffer (DecodeGraphs._take_states).

On a CPU `Replay` runs the function itself on the same buffers: the plumbing is the same everywhere,
so the tests check it without a GPU (the GPU test checks the captured graphs against eager steps).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Callable

import torch

from . import warmup


class Replay:
    """fn() over fixed buffers: captured as a CUDA graph on a GPU, called again on a CPU.

    `outputs` is the tuple of tensors fn returned at capture; each call refreshes them in place.
    """

    def __init__(self, fn: Callable[[], tuple], device: torch.device, pool=None, stream=None):
        self.fn, self.graph = fn, None
        if device.type != "cuda":
            # the first call's tensors, as a capture keeps them: an output that is a static buffer (the
            # next layer's h) stays that buffer, so a CPU copies what a GPU copies, no more
            self.outputs = tuple(fn())
            return
        with torch.cuda.stream(stream):
            fn()  # warm-up outside the capture: cuBLAS picks its kernels and workspace here
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA work (another request) must not break this capture
            self.graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                self.outputs = tuple(fn())
            finally:
                self.graph.capture_end()

    def __call__(self) -> tuple:
        if self.graph is not None:
            self.graph.replay()
        else:
            for mine, new in zip(self.outputs, self.fn()):
                load(mine, new)
        return self.outputs


class DecodeGraphs:
    """The pre-attention and post-attention stretches of every layer, for one batch size, as graphs.

    `stages` (layers.EagerStages) has pre(idx, h, rope) -> (x, q, k, v) and after_attention(idx, h, out,
    x, pos, states, phase) -> h; this object offers the same two, and the same `parts` and `heads`, so
    layers.layer_forward runs over either. Layer idx reads its hidden state from h[idx] and writes the
    next one into h[idx + 1], so when the engine hands back what a post graph returned, nothing is copied.

    A layer's replaced groups step inside its post graph, with the merge of their output and the
    attention heads': the step needs only x, the positions and the state, none of the attention. So a
    layer with replaced groups replays two graphs, like any layer, and launches no eager kernel more
    (benchmarks/recurformer_step_cpu_ops.md); a separate recurrent graph, the merge's index copies and
    a state copy in and out were ~5 eager launches a layer.

    `states` is the first request's {groups: state} per layer, one per unit of recurrent_groups (a
    tensor, or a dataclass of tensors such as the window twin's): the graphs' state buffers take their
    shapes and dtypes. Between its steps a request's states stay in those buffers (its state dict holds
    the buffers themselves, `_take_states`), so a step copies no state; another request taking the
    buffers first moves them out into copies of the request's own. One request uses the graphs at a
    time (`lock`); a concurrent one runs eagerly, unless its states are in the buffers (`holds`): it
    waits for them (engine.decode_stages).
    """

    def __init__(self, stages, num_layers: int, batch: int, hidden: int, heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, states: list[dict]):
        def zeros(*shape):
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.h = [zeros(batch, 1, hidden) for _ in range(num_layers + 1)]
        self.rope = (zeros(batch, 1, 1, head_dim), zeros(batch, 1, 1, head_dim))
        # the attention heads' output, one buffer per head count (a layer with replaced groups has fewer;
        # None: every group replaced, nothing attends)
        by_count = {}
        self.attn_out = [None if n == 0 else by_count.setdefault(n, zeros(batch, n, 1, head_dim))
                         for n in (heads if lh is None else len(lh.q) for lh in stages.heads)]
        self.pos = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.states = [{group: map_state(torch.zeros_like, s) for group, s in layer.items()} for layer in states]
        self.owners: list[dict | None] = [None] * num_layers  # whose state dict holds each layer's buffers
        self.keep_states = True  # False once the store has let these graphs go (`retire`)
        self.lock = threading.Lock()
        self.parts, self.heads = stages.parts, stages.heads
        self._rope_source = self._pos_source = None
        pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(device))
        self.pre_graphs, self.post_graphs = [], []
        for idx in range(num_layers):  # captured in the order they replay, so they can share one pool
            self.pre_graphs.append(Replay(lambda i=idx: stages.pre(i, self.h[i], self.rope), device, pool, stream))
            self.post_graphs.append(Replay(lambda i=idx: self._after_attention(stages, i), device, pool, stream))
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)

    def pre(self, idx: int, h: torch.Tensor, rope) -> tuple:
        load(self.h[idx], h)
        if rope is not self._rope_source:  # one step's RoPE tables serve every layer
            load(self.rope[0], rope[0])
            load(self.rope[1], rope[1])
            self._rope_source = rope
        return self.pre_graphs[idx]()

    def _after_attention(self, stages, idx: int) -> tuple:
        """The captured work after attention, on the layer's static buffers: the replaced groups' step
        (their states advanced in the static state buffers), the merge, o_proj and the MLP."""
        states = dict(self.states[idx])
        x = self.pre_graphs[idx].outputs[0]
        h = stages.after_attention(idx, self.h[idx], self.attn_out[idx], x, self.pos, states, "decode")
        for group, buffer in self.states[idx].items():
            copy_state(buffer, states[group])  # nothing to copy when the step advanced the buffer itself
        return (self.h[idx + 1].copy_(h),)

    def after_attention(self, idx: int, h: torch.Tensor, out: torch.Tensor | None, x: torch.Tensor,
                        pos: torch.Tensor, states: dict, phase: str) -> torch.Tensor:
        assert phase == "decode", "graphs run decode steps only"
        load(self.h[idx], h)
        if out is not None:
            load(self.attn_out[idx], out)
        load(self.pre_graphs[idx].outputs[0], x)
        if self.states[idx]:
            self.load_pos(pos)
            self._take_states(idx, states)
        h = self.post_graphs[idx]()[0]
        if self.states[idx] and not self.keep_states:
            self._give_back(idx)
        return h

    def load_pos(self, pos: torch.Tensor) -> None:
        """The step's positions [B, 1] into the static buffer the graphs read (once a step: one step's
        positions serve every layer)."""
        if pos is not self._pos_source:
            load(self.pos, pos)
            self._pos_source = pos

    def _take_states(self, idx: int, states: dict) -> None:
        """Make layer idx's state buffers hold this request's states, and its state dict the buffers.
        Nothing to copy when they are this request's already (its previous step); a previous holder's
        states first move out into copies of its own."""
        if self.owners[idx] is states:
            return
        self._give_back(idx)
        for group, buffer in self.states[idx].items():
            copy_state(buffer, states[group])
            states[group] = buffer
        self.owners[idx] = states

    def _give_back(self, idx: int) -> None:
        """Layer idx's holder, if any, gets copies of its states instead of the buffers."""
        owner, self.owners[idx] = self.owners[idx], None
        for group, buffer in self.states[idx].items() if owner is not None else ():
            if owner.get(group) is buffer:
                owner[group] = map_state(torch.clone, buffer)

    def holds(self, states: list[dict]) -> bool:
        """Whether some layer's state buffers are these request states' (engine.recurrent_state)."""
        return any(owner is mine for owner, mine in zip(self.owners, states))

    def retire(self) -> None:
        """The store lets these graphs go: every holder gets its states back, and a request that still
        steps here (it found them just before) copies its states out after each layer."""
        with self.lock:
            self.keep_states = False
            for idx in range(len(self.owners)):
                self._give_back(idx)


def map_state(fn: Callable, state):
    """fn applied to a recurrent state: a tensor, or each tensor field of a dataclass (WindowState)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    return dataclasses.replace(state, **{f.name: fn(getattr(state, f.name)) for f in dataclasses.fields(state)})


def copy_state(static, value) -> None:
    """Copy a recurrent state into a graph's state buffer of the same kind, in place (nothing to copy when
    the step advanced the buffer itself: the fused RecurFormer step, recurformer/step_triton.py)."""
    if value is static:
        return
    if isinstance(static, torch.Tensor):
        static.copy_(value)
        return
    for f in dataclasses.fields(static):
        getattr(static, f.name).copy_(getattr(value, f.name))


def request_replay(req, fn: Callable[[], tuple], device: torch.device) -> Replay:
    """fn captured for one request (evict_graphs.py, step_graphs.py): on a GPU in the request's own memory
    pool, freed with it, on a side stream ordered after the current one. A capture is one-time work: the
    step that makes it is warm-up (warmup.py)."""
    if device.type != "cuda":
        replay = Replay(fn, device)
    else:
        if req.graph_pool is None:
            req.graph_pool = torch.cuda.graph_pool_handle()
        stream, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
        stream.wait_stream(current)
        replay = Replay(fn, device, req.graph_pool, stream)
        current.wait_stream(stream)
    warmup.note()
    return replay


def same_objects(old: tuple, new: tuple) -> bool:
    """Whether a graph's binding still holds: the very same objects, in the same places."""
    return len(old) == len(new) and all(a is b for a, b in zip(old, new))


def load(static: torch.Tensor, value: torch.Tensor) -> None:
    """Copy value into a graph's input buffer unless it already is that buffer."""
    if value is not static:
        static.copy_(value)


class GraphStore:
    """The DecodeGraphs of one model, by (batch, which KV heads each layer caches); the most recent few.

    A benchmark that tries many batch sizes would otherwise keep every size's buffers alive.
    """

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()  # requests of several app users may look up (and capture) at once

    def get(self, key, build: Callable[[], DecodeGraphs]) -> DecodeGraphs:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
            while len(self.entries) >= self.capacity:
                self.entries.popitem(last=False)[1].retire()  # waits for a step running on it
            self.entries[key] = graphs = build()
            warmup.note()  # a capture is one-time work: the step that made it is warm-up (warmup.py)
            return graphs


def graph_key(batch: int, heads: list) -> tuple:
    """What one request's decode graphs fit: its batch size and, per layer, the KV heads it caches and
    the modules its replaced groups run as (the graphs bind those modules: another adapter of the same
    shape, or a stack rebuilt from changed groups, needs its own). heads: per layer, a
    recurrent_groups.LayerHeads or None."""
    return (batch, tuple(None if lh is None else (lh.cached, tuple((g, id(m)) for g, m in lh.units.items()))
                         for lh in heads))
