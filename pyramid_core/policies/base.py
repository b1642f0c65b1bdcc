"""The policy interface: what a KV-cache strategy answers, and what the engine tells it.

A policy is a small dataclass. After each layer runs, the engine hands it a `LayerContext` and the
policy answers which slots to keep; it never touches the engine or the cache's buffers. Anything a
policy must remember between steps lives in `ctx.state`, a dict the per-request cache owns, so one
policy object can serve many requests at once.

Prefill answers come as a `Keep` with two independent masks:
- `stream`: which tokens' hidden states go on to the next layer (PyramidInfer: deeper layers compute
  fewer keys and values);
- `cache`:  which slots this layer's cache keeps (cache-only eviction, e.g. StreamingLLM).
Decode answers use `cache` alone. None means "keep everything". A policy that knows how many slots
each row keeps says so in `cache_counts`, which spares the engine a wait for the GPU to count them.

A policy may also replace KV groups with recurrent modules (RecurFormer): `recurrent_modules(lm)`
returns {layer: {kv_group: module}}; the engine runs those groups through the modules and caches no
keys or values for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Keep:
    stream: torch.Tensor | None = None  # [B, T] bool over the layer's slots
    cache: torch.Tensor | None = None   # [B, T] bool over the layer's slots
    cache_counts: list[int] | None = None  # slots each row keeps under `cache`, when the policy knows
    kept_before: int | None = None  # every slot before this index is kept in every row, when the policy knows


def to_device(values: list | torch.Tensor, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """A small host list (or CPU tensor) on the device without waiting for the GPU.

    torch.tensor(..., device=cuda) waits, and so does a non-blocking copy from pageable memory (the
    driver stages it synchronously): only a copy from pinned memory is queued like a kernel.
    """
    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


@dataclass
class LayerContext:
    """What a policy sees of one layer after it ran.

    positions:  [B, T] original position of each slot of the layer (-1 = empty).
    counts:     valid tokens per row in the layer.
    seen:       tokens each row has seen so far (its real prompt length plus generated tokens).
    state:      the policy's per-request memory for this layer.
    shared:     the policy's per-request memory for all layers (e.g. a decay solved once per prompt);
                whatever it puts under "resolved" is shown in the trace.
    scores_fn:  scores_fn(window, distance_weight) -> [B, T] float32: the head-averaged attention of
                each row's last window[b] tokens on every slot, the newest voter weighted
                distance_weight and the oldest 1.0 (kernels/scores.py). Computed only when called.
    """

    layer: int
    num_layers: int
    phase: str
    positions: torch.Tensor
    counts: list[int]
    seen: list[int]
    state: dict
    shared: dict
    scores_fn: Callable[[list[int], float], torch.Tensor]

    def scores(self, window: list[int], distance_weight: float = 1.0) -> torch.Tensor:
        return self.scores_fn(window, distance_weight)


class Policy:
    """Base policy: keeps everything. Subclasses override what they change."""

    name = "full"

    def query_window(self, seen: int) -> int:
        """How many recent queries per layer the engine must keep for decode-time scoring."""
        return 0

    def prefill(self, ctx: LayerContext) -> Keep | None:
        return None

    def decode(self, ctx: LayerContext) -> Keep | None:
        return None

    def recurrent_modules(self, lm) -> dict:
        """{layer: {kv_group: module}} of KV groups this policy runs as recurrences (none here)."""
        return {}

    def describe(self) -> dict:
        """The policy's name and resolved settings, for traces and benchmark metadata."""
        from dataclasses import asdict, is_dataclass

        settings = asdict(self) if is_dataclass(self) else {}
        return {"name": self.name, **settings}


def top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: list[int],
               forced: torch.Tensor | None = None) -> torch.Tensor:
    """Per row, mark the k[b] best-scoring candidate slots (forced slots first). [B, T] bool.

    Ties break towards the earlier slot, so the choice is deterministic and batch-independent.
    """
    B, T = scores.shape
    ranked = scores.float().masked_fill(~candidates, float("-inf"))
    if forced is not None:
        ranked = ranked.masked_fill(forced & candidates, float("inf"))
    # stable descending sort: equal scores keep slot order
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(T, device=scores.device).expand(B, T))
    limit = to_device(k, scores.device)[:, None]
    return (rank < limit) & candidates
