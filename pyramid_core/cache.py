"""The per-request KV store: one buffer per layer, a different length in each, original positions kept.

Layout of one layer, for a batch of B sequences:

    keys, values: [B, H_kv, capacity, D]   slots 0..length-1 are in use
    positions:    [B, capacity]            original RoPE position of each slot, -1 for an empty slot

Rows are right-aligned: a row's tokens sit in order at the end of the used slots, and a row that holds
fewer tokens than the longest one has empty slots (position -1) at the front. That covers left-padded
prompts and rows that a policy compressed to different lengths with one representation; attention masks
are built from positions alone (attention.py), so an empty slot is never attended, kept or
counted.

Buffers grow in blocks of `block` slots, so a decode step writes in place instead of concatenating the
whole cache (what transformers' DynamicCache does).

A window (sinks plus the newest tokens, `keep_window`) is kept as a ring: the oldest non-sink slot is
freed and the next token is written into it, so a streaming step moves nothing and launches nothing
beyond the write. Slots are then no longer in position order; attention does not care (keys carry their
RoPE from the write, masks come from positions), and anything that needs order restores it first
(`keep`) or sorts what it reads (`positions_of_row`). An `Evict` (H2O) works the same way with one slot per
row: each row frees the slot of its lowest-scoring token and its next token is written there (`evict`),
so a decode step that drops one token per row moves nothing either. `nbytes()` is what the buffers
hold, spare slots included: that is the memory the cache really takes.

A reserve (`KVCache(reserve=n)`, the engine's `reserve_kv`) sizes each layer's buffers for the whole
request: the prefill's first write takes its slots plus n more (a request's new tokens, or what the policy
plans to add to that layer: `Policy.planned_growth`), and after the prefill (`reserve()`) a layer that the
policy cut is sized once more, to the slots it kept plus n; a layer that kept everything keeps its first
buffers. Growth and compaction then never allocate: `keep`
writes the kept slots back into the front of the same buffers, and the caching allocator holds one
buffer pair per layer for the whole request. When the policy keeps the whole prompt (the baseline), the
sizes are known before the prefill and every layer is allocated then (`presize`), before any
activation: a reserve taken during a layer's prefill is carved out of blocks the activations freed,
leaving remainders that fit nothing later. The price of a reserve is that `nbytes()` of a reserved
request is flat by design (taken at the prefill, before the tokens arrive).

Counts of valid tokens per row are tracked on the host, so reading them never waits for the GPU.
"""

from __future__ import annotations

import operator
from collections import deque

import torch

from .kernels.lowest_slot import lowest_slot
from .kernels.move_slots import gathered_slots, move_slots
from .metrics import state_nbytes
from .policies.base import Evict, Keep, Window
from .transfer import to_device


class LayerCache:
    """Keys, values and original positions of one layer, for every row of the batch."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, block: int, reserve: int | None = None):
        self.block = block
        self.reserve_new = reserve  # slots reserve() adds to what the prefill left; None: grow in blocks
        self.reserved = False       # reserve() sized the buffers: they are never reallocated again
        self.keys = torch.empty(batch, kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.values = torch.empty_like(self.keys)
        self.positions = torch.empty(batch, 0, dtype=torch.long, device=device)
        self.length = 0
        self.counts = [0] * batch  # valid tokens per row, on the host
        self.has_holes = False     # some row has empty slots in use
        self.ordered = True        # every row's slots are in position order (right-aligned)
        self.free: list[int] = []  # slots dropped by keep_window that the next token overwrites
        self.ring: deque | None = None  # keep_window's non-sink slots, oldest first (None: not a ring)
        self.ring_sinks = 0
        self.evicted: torch.Tensor | None = None  # [B] each row's slot freed by evict(), for its next token

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys [B, H_kv, T, D], values [B, H_kv, T, D], positions [B, T]) of the slots in use."""
        self._settle()
        n = self.length
        return self.keys[:, :, :n], self.values[:, :, :n], self.positions[:, :n]

    def attended(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, positions) of the slots in use as the layer's last attention read them: slots freed since
        (a ring window's, an eviction's) keep their tokens until the next one is written, and stay pending."""
        n = self.length
        return self.keys[:, :, :n], self.positions[:, :n]

    def moves(self, answer: Keep | Window | Evict) -> bool:
        """Whether apply(answer) rewrites the buffers (a Keep, a window over a layer that cannot ring)
        rather than only marking slots for the next tokens to take (an eviction, a ring window)."""
        if isinstance(answer, Evict):
            return False
        if isinstance(answer, Window):
            drops = self._drops(answer.counts)
            return drops != {0} and not self._can_ring(answer.sinks, drops)
        return True

    def held(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [B, H_kv, T, D], positions [B, T]) of the slots in use: what a policy reads."""
        keys, _, positions = self.view()
        return keys, positions

    def append(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
               valid_counts: list[int]) -> None:
        """Write t new slots per row. keys, values: [B, H_kv, t, D]; positions: [B, t] (-1 = empty)."""
        B, H, t, D = keys.shape
        assert values.shape == keys.shape and positions.shape == (B, t), "append: shape mismatch"
        assert len(valid_counts) == B
        if t == 1 and all(v == 1 for v in valid_counts):
            if self.free:
                self._write_free(keys, values, positions)
                return
            if self.evicted is not None:
                self._write_evicted(keys, values, positions)
                return
        self._settle()
        if self.ring is not None:  # t new slots at the end, newest last (a ring tracks single tokens)
            self.ring.extend(range(self.length, self.length + t))
        if self.length + t > self.capacity:
            # under a reserve the first write (the prefill's) takes the whole reserve at once, so a layer its
            # policy does not cut is allocated once (a policy that keeps the whole prompt is presized instead)
            first = self.reserve_new is not None and self.capacity == 0
            self._reallocate(self.length + t + (self.reserve_new if first else 0))
        end = self.length + t
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.positions[:, self.length:end] = positions
        self.length = end
        self.counts = [c + v for c, v in zip(self.counts, valid_counts)]
        self.has_holes = self.has_holes or any(v != t for v in valid_counts)

    def apply(self, answer: Keep | Window | Evict) -> None:
        """Carry out a policy's answer (policies/base.py)."""
        if isinstance(answer, Window):
            self.keep_window(answer.sinks, answer.counts)
        elif isinstance(answer, Evict):
            self.evict(answer.scores)
        else:
            self.keep(answer.scores, answer.counts)

    def keep(self, scores: torch.Tensor, kept: list[int]) -> None:
        """Keep, in each row, the kept[b] best-scoring of its newest n tokens (scores [B, n]) and every
        older token; drop the rest. This is a policy's Keep (policies/base.py) carried out.

        Each row's kept slots move to the end (right-aligned); shorter rows get empty slots in front.
        When every row is full and keeps as many slots as the others, only the last n slots move, in
        place (PyramidInfer's decode chunks sit just before the recent window); otherwise the buffers
        are reallocated to the new length, or under a reserve the kept slots are written back into the
        front of the same buffers. On a layer out of position order (a ring, evictions), scores
        of every slot follow the slots as the policy saw them; fewer are read as the newest tokens.
        """
        self._settle()
        if not self.ordered:
            order = self._restore_order()
            if scores.shape[1] == self.length:  # scores of every column, as the policy saw them: reorder too
                scores = scores.gather(1, order)
        self.ring = None  # the slots move: a later window starts a new ring
        n = scores.shape[1]
        start = self.length - n
        assert start >= 0, "keep: more scores than slots"
        counts = self.counts_after(n, kept)
        if start > 0 and not self.has_holes and len(set(counts)) == 1:
            self._keep_tail(scores, counts[0], start)
            self.counts = counts
            return
        chosen = top_k_mask(scores, self.positions[:, start:self.length] >= 0, kept)
        keep_mask = torch.cat((self.positions[:, :start] >= 0, chosen), dim=1)
        new_len = max(counts) if counts else 0
        index = right_aligned_index(keep_mask, new_len)
        new_keys, new_values, new_positions = self._gathered(index)
        new_positions = new_positions.masked_fill(~keep_mask.gather(1, index), -1)
        if self.reserved:  # the gathered copies go back into the front of the same buffers
            self._write_prefix(new_keys, new_values, new_positions)
        else:  # under a pending reserve (a prefill's cut) the new buffers take it, so reserve() keeps them
            self._reallocate(new_len + (self.reserve_new or 0), fill=(new_keys, new_values, new_positions))
        self.counts = counts
        self.has_holes = len(set(counts)) > 1

    def keep_window(self, sinks: int, kept: list[int]) -> None:
        """Keep, in each row, its first `sinks` tokens and its newest kept[b] - sinks; drop the rest.

        When every row drops the same number of tokens and holds them in the same slots (no holes), the
        oldest non-sink slots are freed for the next tokens to overwrite (a ring, host arithmetic only);
        otherwise the rows are compacted by keep() with scores that rank the same tokens first.
        """
        drops = self._drops(kept)
        if drops == {0}:
            return
        if self._can_ring(sinks, drops):
            if self.ring is None or self.ring_sinks != sinks:  # a ring over the ordered slots after the sinks
                self.ring, self.ring_sinks = deque(range(sinks, self.length)), sinks
            (drop,) = drops
            self.free += [self.ring.popleft() for _ in range(drop)]
            self.counts = list(kept)
            return
        self.keep(self._window_scores(sinks, kept), list(kept))

    def evict(self, scores: torch.Tensor) -> None:
        """Free, in each row, the slot of its lowest-scoring token (scores [B, length] over the slots in
        use; equal scores: the newer token goes, as keep() keeps the older); the row's next token is
        written into that slot (append), so nothing moves and nothing waits for the GPU.

        The choice stays on the device: a [B] slot index, one reduction per row, no sort and no copy of
        the layer. Until the next token arrives the freed slot counts as empty (`_settle`).
        """
        self._settle()
        assert scores.shape == (len(self.counts), self.length), "evict: one score per slot in use"
        assert min(self.counts) >= 1, "evict: a row holds nothing"
        self.evicted = self.lowest_slot(scores)
        self.counts = [c - 1 for c in self.counts]
        self.ring = None

    def lowest_slot(self, scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B] each row's slot of lowest score, evict()'s choice (into out when given): among the lowest,
        the newest position; an empty slot is never chosen while the row holds anything else. Device work
        only, so that a captured graph can repeat it (evict_graphs.py); kernels/lowest_slot.py."""
        return lowest_slot(scores, self.positions[:, :self.length], self.has_holes, out)

    def _drops(self, kept: list[int]) -> set[int]:
        """How many tokens the rows drop to keep kept[b] each, as a set: {0} when none drops, one number
        when every row drops the same (a set, because this runs for every layer at every streaming step)."""
        drops = set(map(operator.sub, self.counts, kept))
        assert min(drops) >= 0, "keep_window: more kept than held"
        return drops

    def _can_ring(self, sinks: int, drops: set[int]) -> bool:
        """Whether keep_window can free ring slots: the same drop in every row, no holes, enough non-sinks,
        and a ring with these sinks already, or ordered slots to start one over."""
        if self.has_holes or self.free or len(drops) != 1 or self.length - sinks < max(drops):
            return False
        return (self.ring is not None and self.ring_sinks == sinks) or self.ordered

    def _window_scores(self, sinks: int, kept: list[int]) -> torch.Tensor:
        """[B, length] scores of an ordered layer: 1 for each row's first `sinks` tokens and its newest
        kept[b] - sinks, 0 for the rest (keep() then drops exactly the zeros)."""
        self._settle()
        if not self.ordered:
            self._restore_order()
        device = self.positions.device
        slot = torch.arange(self.length, device=device)[None, :]
        first = self.length - to_device(self.counts, device)[:, None]  # each row's oldest slot
        newest = to_device([max(0, k - sinks) for k in kept], device)[:, None]
        rank = slot - first
        stays = (rank >= 0) & ((rank < sinks) | (self.length - 1 - slot < newest))
        return stays.float()

    def _write_free(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        """One token per row into the oldest freed slot (the same slot in every row)."""
        slot = self.next_slot()
        self.keys[:, :, slot:slot + 1] = keys
        self.values[:, :, slot:slot + 1] = values
        self.positions[:, slot:slot + 1] = positions
        self.took_next()

    def _write_evicted(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        """One token per row into the slot evict() freed in that row: an indexed write per buffer."""
        self.write_slots(self.evicted, keys, values, positions)
        self.counts = [c + 1 for c in self.counts]
        self.evicted, self.ordered = None, False

    def write_slots(self, slot: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    positions: torch.Tensor) -> None:
        """One token per row into slot[b] of row b; device work only, so that a captured graph can repeat
        it (evict_graphs.py)."""
        B, H, _, D = keys.shape
        index = slot.view(B, 1, 1, 1).expand(B, H, 1, D)
        self.keys.scatter_(2, index, keys)
        self.values.scatter_(2, index, values)
        self.positions.scatter_(1, slot[:, None], positions)

    def next_slot(self) -> int:
        """The slot the next token of every row goes into: the oldest one a ring freed, else the first unused."""
        return self.free[0] if self.free else self.length

    def took_next(self) -> None:
        """The host's part of append() after a graph wrote one token per row into next_slot()
        (step_graphs.py): the same bookkeeping as _write_free or as a single token's append."""
        if self.free:
            self.ring.append(self.free.pop(0))
            self.ordered = False
        else:
            if self.ring is not None:
                self.ring.append(self.length)
            self.length += 1
        self.counts = [c + 1 for c in self.counts]

    def _settle(self) -> None:
        """Freed slots that no token overwrote become empty slots (holes); a no-op in the decode loop,
        where the next token fills the slot before anything reads the layer."""
        if self.free:
            self.positions[:, self.free] = -1
            self.free, self.has_holes = [], True
        if self.evicted is not None:
            self.positions.scatter_(1, self.evicted[:, None], -1)
            self.evicted, self.has_holes = None, True

    def held_positions(self, row: int) -> list[int]:
        """The original positions row `row` holds, in order; a read that leaves freed slots pending
        (a record between two steps must not turn a ring or an eviction into holes)."""
        pos = self.positions[row, :self.length].clone()
        if self.free:
            pos[self.free] = -1
        if self.evicted is not None:
            pos[self.evicted[row]] = -1
        return sorted(pos[pos >= 0].tolist())

    def _restore_order(self) -> torch.Tensor:
        """Put each row's slots back in position order, empty slots first (undoes a ring or evictions).
        Returns the [B, length] slot index each new slot came from."""
        n = self.length
        index = torch.sort(self.positions[:, :n], dim=1, stable=True).indices  # -1 (empty) sorts first
        self.keys[:, :, :n], self.values[:, :, :n], self.positions[:, :n] = self._gathered(index)
        self.ordered, self.ring = True, None
        return index

    def _gathered(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies of the slots in use that index [B, n] picks in each row: (keys [B, H, n, D], values,
        positions [B, n]). Copies, so they can be written back over the slots they came from."""
        n = self.length
        keys, values = gathered_slots(self.keys[:, :, :n], self.values[:, :, :n], index)
        return keys, values, self.positions[:, :n].gather(1, index)

    def counts_after(self, n: int, kept: list[int]) -> list[int]:
        """Tokens each row holds once it keeps kept[b] of its newest n (host arithmetic: no GPU wait)."""
        assert all(k <= min(held, n) for held, k in zip(self.counts, kept)), "keep: more kept than held"
        return [held - min(held, n) + k for held, k in zip(self.counts, kept)]

    def _keep_tail(self, scores: torch.Tensor, new_len: int, start: int) -> None:
        """keep() for full rows that all keep new_len slots, every slot before `start` among them: the
        best new_len - start of the scored slots from `start` on (scores [B, length - start]) move down
        in place; nothing before is touched.

        Every scored slot is valid and every row keeps as many, so the first slots of a stable
        descending sort are top_k_mask's choice, and sorting their indices puts them in order: two
        sorts, where a kept mask and its right-aligned index took two sorts and a dozen more ops. The kept
        slots move in place (kernels/move_slots.py), the keys and values of a row in one program on a GPU.
        """
        best = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices[:, :new_len - start]
        index = best.sort(dim=1).values + start
        move_slots(self.keys[:, :, :self.length], self.values[:, :, :self.length], index, start)
        self.positions[:, start:new_len] = self.positions[:, :self.length].gather(1, index)
        self.positions[:, new_len:self.length] = -1
        self.length = new_len

    def nbytes(self) -> int:
        """Bytes of the K and V buffers, spare slots (and a reserve) included: the memory taken."""
        return self.keys.numel() * self.keys.element_size() * 2

    def reserve(self) -> None:
        """Size the buffers once for the rest of the request: the slots in use plus `reserve_new`,
        rounded up to the block. Called after the layer's prefill (and its cut), so a layer a policy
        cut reserves only what it kept; its prefill's buffers are freed here, and the allocator reuses
        them for the next layer's. Slot indices are unchanged, so a ring or an eviction carries over.
        A no-op without a reserve or once reserved; it keeps the buffers the first write sized when they
        are already that size (a layer that was not cut)."""
        if self.reserve_new is None or self.reserved:
            return
        if self.capacity != self._rounded(self.length + self.reserve_new):
            self._reallocate(self.length + self.reserve_new)
        self.reserved = True

    def presize(self, slots: int) -> None:
        """Allocate the buffers for `slots` before anything is written (KVCache.presize)."""
        assert self.capacity == 0, "presize: the layer already holds buffers"
        self._reallocate(slots)

    def _write_prefix(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
        """Compaction under a reserve: n slots (keys, values [B, H, n, D], positions [B, n], copies)
        into slots 0..n-1 of the same buffers; the slots that were in use after them become empty."""
        n = keys.shape[2]
        self.keys[:, :, :n], self.values[:, :, :n], self.positions[:, :n] = keys, values, positions
        self.positions[:, n:self.length] = -1
        self.length = n

    def _rounded(self, slots: int) -> int:
        return -(-slots // self.block) * self.block

    def _reallocate(self, needed: int, fill=None) -> None:
        assert not self.reserved, f"the reserve of {self.capacity} slots is exceeded ({needed} needed)"
        capacity = self._rounded(needed)
        B, H, _, D = self.keys.shape
        # a reserve's slots are zeroed: attention over the whole reservation (step_graphs.py) weighs the
        # unwritten ones by 0, and 0 x a NaN of uninitialised memory would still be NaN
        new = self.keys.new_zeros if self.reserve_new is not None else self.keys.new_empty
        keys, values = new(B, H, capacity, D), new(B, H, capacity, D)
        positions = self.positions.new_full((B, capacity), -1)
        if fill is None:
            fill = (self.keys[:, :, : self.length], self.values[:, :, : self.length],
                    self.positions[:, : self.length])
        n = fill[0].shape[2]
        keys[:, :, :n], values[:, :, :n], positions[:, :n] = fill
        self.keys, self.values, self.positions, self.length = keys, values, positions, n


def top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: list[int]) -> torch.Tensor:
    """Per row, mark the k[b] best-scoring candidate slots. scores, candidates [B, T] -> [B, T] bool.

    Ties break towards the earlier slot, so the choice is deterministic and batch-independent.
    """
    B, T = scores.shape
    ranked = scores.float().masked_fill(~candidates, float("-inf"))
    # stable descending sort: equal scores keep slot order
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(T, device=scores.device).expand(B, T))
    # one count for every row (a decode cut): a number, not a host-to-device copy per call
    limit = k[0] if len(set(k)) == 1 else to_device(k, scores.device)[:, None]
    return (rank < limit) & candidates


def right_aligned_index(keep_mask: torch.Tensor, new_len: int) -> torch.Tensor:
    """Slot indices [B, new_len] that put each row's kept slots, in order, at the end of the row.

    A stable sort of the keep flags orders dropped slots first and kept ones after, each in their
    original order; the last new_len of them are what a row keeps (shorter rows pick up a few dropped
    slots in front, which the caller marks empty).
    """
    order = torch.sort(keep_mask.to(torch.int8), dim=1, stable=True).indices
    return order[:, keep_mask.shape[1] - new_len:]


class KVCache:
    """All layers of one request, and the states of its recurrent KV groups (RecurFormer)."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int | list[int], head_dim: int,
                 dtype: torch.dtype, device: torch.device | list[torch.device], block: int = 16,
                 reserve: int | list[int] | None = None):
        """device: one for every layer, or a list with each layer's device (a model spread over GPUs).
        reserve: slots each layer's reserve() adds to what its prefill left (the request's new tokens, or
        a policy's planned growth per layer); None (default): buffers grow in blocks and compaction
        reallocates."""
        heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * num_layers
        devices = device if isinstance(device, (list, tuple)) else [device] * num_layers
        reserves = reserve if isinstance(reserve, list) else [reserve] * num_layers
        self.layers = [LayerCache(batch, h, head_dim, dtype, d, block, r)
                       for h, d, r in zip(heads, devices, reserves)]
        # RecurFormer: {kv_group: state} per layer for groups that run as recurrences
        self.recurrent_state: list[dict] = [{} for _ in range(num_layers)]
        self.peak_bytes = 0

    def presize(self, prompt_slots: int) -> None:
        """Under a reserve, size every layer for the prompt's slots plus the reserve before the prefill,
        for a policy that keeps every prompt token (the baseline): each layer's size is known, and taking
        it before any activation exists keeps the long-lived KV from being carved out of the prefill's
        short-lived blocks, whose remainders the caching allocator could not reuse (Table 1's baseline:
        58 GB allocated of the 80 reserved at its largest batch, 44, when each layer took its reserve
        during its own prefill)."""
        for layer in self.layers:
            layer.presize(prompt_slots + layer.reserve_new)

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        """Bytes of K and V held by every layer (spare capacity included), plus recurrent states."""
        states = sum(state_nbytes(s) for by_group in self.recurrent_state for s in by_group.values())
        return sum(layer.nbytes() for layer in self.layers) + states

    def update_peak(self, held: int) -> int:
        """The most bytes held so far, `held` (this step's nbytes()) included."""
        self.peak_bytes = max(self.peak_bytes, held)
        return self.peak_bytes

    def counts_per_row(self) -> list[list[int]]:
        """[B][L]: valid tokens each row holds in each layer."""
        return [list(row) for row in zip(*(layer.counts for layer in self.layers))]

    def positions_of_row(self, row: int = 0) -> list[list[int]]:
        """Per layer, the original positions row `row` holds, in order (a ring holds them out of order)."""
        return [layer.held_positions(row) for layer in self.layers]
