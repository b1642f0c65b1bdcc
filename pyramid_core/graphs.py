"""CUDA graphs for the fixed-shape parts of a decode step.

A decode step on a big model is launch-bound: every layer launches ~25 small kernels, and on an H200
at batch 128 (Llama-2-13B shape) a step took ~35 ms where its weight and KV traffic need ~12. Most of
those kernels sit in two stretches whose shapes never change from step to step: before attention
(norm, q/k/v projections, RoPE) and after it (o_proj, residual, norm, MLP, residual). Those two stretches
of every layer are captured once per batch size as CUDA graphs and replayed, one launch each. What
changes shape every step stays eager between them: appending to the cache, attention over the slots a
layer holds (a different count per layer with PyramidInfer), the policy's bookkeeping and the
recurrences. This is the "piecewise" use of CUDA graphs that vLLM makes, without a compiler.

A graph reads and writes fixed buffers, so inputs are copied into `DecodeGraphs`'s static tensors and
its outputs are overwritten by the next replay: they are valid until the same layer runs again.

On a CPU `Replay` runs the function itself on the same buffers: the plumbing is the same everywhere,
so the tests check it without a GPU (the GPU test checks the captured graphs against eager steps).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import torch


class Replay:
    """fn() over fixed buffers: captured as a CUDA graph on a GPU, called again on a CPU.

    `outputs` is the tuple of tensors fn returned at capture; each call refreshes them in place.
    """

    def __init__(self, fn: Callable[[], tuple], device: torch.device, pool=None, stream=None):
        self.fn, self.graph = fn, None
        if device.type != "cuda":
            self.outputs = tuple(t.clone() for t in fn())
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
                mine.copy_(new)
        return self.outputs


class DecodeGraphs:
    """The pre- and post-attention stretches of every layer, for one batch size, as graphs.

    `stages` has pre(idx, h, rope) -> (x, q, k, v) and post(idx, h, attn_out) -> h (engine.EagerStages);
    this object offers the same two methods. Layer idx reads its hidden state from h[idx] and writes the
    next one into h[idx + 1], so when the engine hands back what post returned, nothing is copied.
    One request uses it at a time (`lock`); a concurrent one runs eagerly.
    """

    def __init__(self, stages, num_layers: int, batch: int, hidden: int, heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        def zeros(*shape):
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.h = [zeros(batch, 1, hidden) for _ in range(num_layers + 1)]
        self.rope = (zeros(batch, 1, 1, head_dim), zeros(batch, 1, 1, head_dim))
        self.attn_out = zeros(batch, heads, 1, head_dim)
        self.lock = threading.Lock()
        self._rope_source = None
        pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(device))
        self.pre_graphs, self.post_graphs = [], []
        for idx in range(num_layers):  # captured in the order they replay, so they can share one pool
            self.pre_graphs.append(Replay(lambda i=idx: stages.pre(i, self.h[i], self.rope), device, pool, stream))
            self.post_graphs.append(Replay(lambda i=idx: (self.h[i + 1].copy_(stages.post(i, self.h[i], self.attn_out)),),
                                           device, pool, stream))
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)

    def pre(self, idx: int, h: torch.Tensor, rope) -> tuple:
        load(self.h[idx], h)
        if rope is not self._rope_source:  # one step's RoPE tables serve every layer
            load(self.rope[0], rope[0])
            load(self.rope[1], rope[1])
            self._rope_source = rope
        return self.pre_graphs[idx]()

    def post(self, idx: int, h: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        load(self.h[idx], h)
        self.attn_out.copy_(attn_out)
        return self.post_graphs[idx]()[0]


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
                self.entries.popitem(last=False)
            self.entries[key] = graphs = build()
            return graphs

    def clear(self) -> None:
        self.entries.clear()
