"""The per-request KV store: one buffer per layer, a different length in each, original positions kept.

Layout of one layer, for a batch of B sequences:

    keys, values: [B, H_kv, capacity, D]   slots 0..length-1 are in use
    positions:    [B, capacity]            original RoPE position of each slot, -1 for an empty slot

Rows are right-aligned: a row's tokens sit in order at the end of the used slots, and a row that holds
fewer tokens than the longest one has empty slots (position -1) at the front. That covers left-padded
prompts and rows that a policy compressed to different lengths with one representation; attention masks
are built from positions alone (engine.attention_mask), so an empty slot is never attended, kept or
counted.

Buffers grow in blocks of `block` slots, so a decode step writes in place instead of concatenating the
whole cache (what transformers' DynamicCache does). `nbytes()` is what the buffers hold, spare slots
included: that is the memory the cache really takes.

Counts of valid tokens per row are tracked on the host, so reading them never waits for the GPU.
"""

from __future__ import annotations

import torch


def state_nbytes(state) -> int:
    """Bytes of a recurrent state: a tensor, or an object that counts its own bytes."""
    if state is None:
        return 0
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    return state.nbytes()


class LayerCache:
    """Keys, values and original positions of one layer, for every row of the batch."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, block: int):
        self.block = block
        self.keys = torch.empty(batch, kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.values = torch.empty_like(self.keys)
        self.positions = torch.empty(batch, 0, dtype=torch.long, device=device)
        self.length = 0
        self.counts = [0] * batch  # valid tokens per row, on the host
        self.has_holes = False     # some row has empty slots in use

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys [B, H_kv, T, D], values [B, H_kv, T, D], positions [B, T]) of the slots in use."""
        n = self.length
        return self.keys[:, :, :n], self.values[:, :, :n], self.positions[:, :n]

    def append(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
               valid_counts: list[int]) -> None:
        """Write t new slots per row. keys, values: [B, H_kv, t, D]; positions: [B, t] (-1 = empty)."""
        B, H, t, D = keys.shape
        assert values.shape == keys.shape and positions.shape == (B, t), "append: shape mismatch"
        assert len(valid_counts) == B
        if self.length + t > self.capacity:
            self._reallocate(self.length + t)
        end = self.length + t
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.positions[:, self.length:end] = positions
        self.length = end
        self.counts = [c + v for c, v in zip(self.counts, valid_counts)]
        self.has_holes = self.has_holes or any(v != t for v in valid_counts)

    def keep(self, keep_mask: torch.Tensor, counts: list[int] | None = None, kept_before: int | None = None) -> None:
        """Keep the slots where keep_mask [B, T] is True, in their order; drop the rest.

        Each row's kept slots move to the end (right-aligned); shorter rows get empty slots in front.
        `counts`, the kept slots per row, may be given by a caller that knows them: counting them here
        waits for the GPU. `kept_before`, when given, says that every slot before it is kept in every
        row; if then every row is full and keeps as many slots as the others, only the slots from there
        on move, in place (PyramidInfer's decode chunks sit just before the recent window).
        """
        assert keep_mask.shape == (self.keys.shape[0], self.length), "keep: mask shape mismatch"
        keep_mask = keep_mask & (self.positions[:, : self.length] >= 0)
        if counts is None:
            counts = keep_mask.sum(dim=1).tolist()
        if kept_before is not None and not self.has_holes and len(set(counts)) == 1 \
                and 0 <= kept_before <= counts[0]:
            self._keep_tail(keep_mask, counts[0], kept_before)
            self.counts = list(counts)
            return
        new_len = max(counts) if counts else 0
        index = right_aligned_index(keep_mask, new_len)
        keys, values, positions = self.view()
        rows = torch.arange(keys.shape[0], device=keys.device)[:, None]
        new_keys = keys[rows, :, index].transpose(1, 2)  # [B, new_len, H, D] -> [B, H, new_len, D]
        new_values = values[rows, :, index].transpose(1, 2)
        new_positions = positions.gather(1, index).masked_fill(~keep_mask.gather(1, index), -1)
        self._reallocate(new_len, fill=(new_keys, new_values, new_positions))
        self.counts = counts
        self.has_holes = len(set(counts)) > 1

    def _keep_tail(self, keep_mask: torch.Tensor, new_len: int, start: int) -> None:
        """keep() for full rows that all keep new_len slots, every slot before `start` among them:
        the kept slots from `start` on move down in place; nothing before `start` is touched."""
        index = right_aligned_index(keep_mask[:, start:self.length], new_len - start) + start
        keys, values, positions = self.view()
        rows = torch.arange(keys.shape[0], device=keys.device)[:, None]
        self.keys[:, :, start:new_len] = keys[rows, :, index].transpose(1, 2)  # the gathers copy first
        self.values[:, :, start:new_len] = values[rows, :, index].transpose(1, 2)
        self.positions[:, start:new_len] = positions.gather(1, index).masked_fill(~keep_mask.gather(1, index), -1)
        self.positions[:, new_len:self.length] = -1
        self.length = new_len

    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2

    def _reallocate(self, needed: int, fill=None) -> None:
        capacity = -(-needed // self.block) * self.block
        B, H, _, D = self.keys.shape
        keys = self.keys.new_empty(B, H, capacity, D)
        values = self.values.new_empty(B, H, capacity, D)
        positions = self.positions.new_full((B, capacity), -1)
        if fill is None:
            fill = (self.keys[:, :, : self.length], self.values[:, :, : self.length],
                    self.positions[:, : self.length])
        n = fill[0].shape[2]
        keys[:, :, :n], values[:, :, :n], positions[:, :n] = fill
        self.keys, self.values, self.positions, self.length = keys, values, positions, n


def right_aligned_index(keep_mask: torch.Tensor, new_len: int) -> torch.Tensor:
    """Slot indices [B, new_len] that put each row's kept slots, in order, at the end of the row.

    A stable sort of the keep flags orders dropped slots first and kept ones after, each in their
    original order; the last new_len of them are what a row keeps (shorter rows pick up a few dropped
    slots in front, which the caller marks empty).
    """
    order = torch.sort(keep_mask.to(torch.int8), dim=1, stable=True).indices
    return order[:, keep_mask.shape[1] - new_len:]


class RecentQueries:
    """A layer's most recent queries (after RoPE) and their positions, for decode-time scoring.

    Appending writes in place into a buffer with SLACK spare slots; when they run out, the last
    `width` queries move to the buffer's front (growing it if the window has grown). Concatenating at
    every step instead copied the whole window every step: a quarter of a decode step at batch 128 on
    the Llama-2-13B shape (H200, 2026-11-26).
    """

    SLACK = 32

    def __init__(self, queries: torch.Tensor, positions: torch.Tensor):
        """Start from a prefill's last queries [B, H, W, D] and positions [B, W] (copied)."""
        B, H, W, D = queries.shape
        self.queries = queries.new_empty(B, H, W + self.SLACK, D)
        self.positions = positions.new_full((B, W + self.SLACK), -1)
        self.queries[:, :, :W], self.positions[:, :W] = queries, positions
        self.length = W

    def append(self, queries: torch.Tensor, positions: torch.Tensor, width: int) -> None:
        """Add t queries [B, H, t, D] (positions [B, t]); keep at least the last `width`."""
        t = queries.shape[2]
        if self.length + t > self.queries.shape[2]:
            keep = min(width, self.length)
            recent = (self.queries[:, :, self.length - keep:self.length].clone(),
                      self.positions[:, self.length - keep:self.length].clone())
            if keep + t + self.SLACK // 2 > self.queries.shape[2]:  # the window has grown: a bigger buffer
                B, H, _, D = self.queries.shape
                self.queries = self.queries.new_empty(B, H, keep + t + self.SLACK, D)
                self.positions = self.positions.new_full((B, keep + t + self.SLACK), -1)
            self.queries[:, :, :keep], self.positions[:, :keep] = recent
            self.length = keep
        self.queries[:, :, self.length:self.length + t] = queries
        self.positions[:, self.length:self.length + t] = positions
        self.length += t

    def view(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `width` queries [B, H, width, D] and positions [B, width] (fewer if fewer are held)."""
        start = max(0, self.length - width)
        return self.queries[:, :, start:self.length], self.positions[:, start:self.length]


class KVCache:
    """All layers of one request, plus the per-request state of its policy.

    A policy object is shared between requests and holds nothing between steps: what it must remember
    (e.g. PyramidInfer's per-layer "compressed up to here" marker) lives in `policy_state[layer]`.
    The engine also keeps each layer's most recent queries here when the policy scores with them.
    """

    def __init__(self, num_layers: int, batch: int, kv_heads: int | list[int], head_dim: int,
                 dtype: torch.dtype, device: torch.device, block: int = 16):
        heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * num_layers
        self.layers = [LayerCache(batch, h, head_dim, dtype, device, block) for h in heads]
        # RecurFormer: {kv_group: state} per layer for groups that run as recurrences
        self.recurrent_state: list[dict] = [{} for _ in range(num_layers)]
        self.policy_state: list[dict] = [{} for _ in range(num_layers)]
        self.shared_state: dict = {}
        self.recent_queries: list[RecentQueries | None] = [None] * num_layers
        self.peak_bytes = 0

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        """Bytes of K and V held by every layer (spare capacity included), plus recurrent states."""
        states = sum(state_nbytes(s) for by_group in self.recurrent_state for s in by_group.values())
        return sum(layer.nbytes() for layer in self.layers) + states

    def update_peak(self) -> int:
        self.peak_bytes = max(self.peak_bytes, self.nbytes())
        return self.peak_bytes

    def counts_per_row(self) -> list[list[int]]:
        """[B][L]: valid tokens each row holds in each layer."""
        return [list(row) for row in zip(*(layer.counts for layer in self.layers))]

    def positions_of_row(self, row: int = 0) -> list[list[int]]:
        """Per layer, the original positions row `row` holds, in order."""
        out = []
        for layer in self.layers:
            pos = layer.positions[row, : layer.length]
            out.append(pos[pos >= 0].tolist())
        return out
