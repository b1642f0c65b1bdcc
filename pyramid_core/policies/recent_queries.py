"""A layer's most recent queries, kept for decode-time scoring (PyramidInfer's voters)."""

from __future__ import annotations

import torch

SPARE_BYTES = 4 << 20  # spare room a layer's buffer may hold
MIN_SLACK, MAX_SLACK = 32, 512


def slack_for(queries: torch.Tensor) -> int:
    """Spare slots past the window for a buffer of queries [B, H, W, D] whose widest window is not known:
    as many as SPARE_BYTES hold, within [MIN_SLACK, MAX_SLACK]. The window grows into them before the
    buffer has to be replaced (a new buffer means a new step graph); at batch 128 on the 13B shape one slot
    is 1.3 MB a layer, so the floor is already 1.7 GB over 40 layers."""
    B, H, _, D = queries.shape
    per_slot = B * H * D * queries.element_size() + B * 8  # a query a row and its int64 position
    return max(MIN_SLACK, min(MAX_SLACK, SPARE_BYTES // per_slot))


class RecentQueries:
    """A layer's most recent queries (after RoPE) and their positions, for decode-time scoring.

    A ring: each new query goes into the slot after the newest, over the oldest once the buffer is full,
    so decoding never moves the queries it keeps. (A buffer with spare room past the window moved the
    window to its front whenever the room ran out: ~9 ms of a step at Table 1's 134 rows, H200,
    2026-12-02, and its 32 spare slots a layer held 1.8 GB at 138 rows.) A planned generation, whose widest
    window is known, gets a buffer of exactly that many slots, the same storage to its last step; otherwise
    the buffer has `slack` spare slots, and a window that outgrows it moves into a larger one.
    """

    def __init__(self, queries: torch.Tensor, positions: torch.Tensor, slack: int | None = None,
                 widest: int | None = None):
        """Start from a prefill's last queries [B, H, W, D] and positions [B, W] (copied). widest: the
        widest window the request will keep, when it is known; else `slack` spare slots (None: slack_for)."""
        B, H, W, D = queries.shape
        self.slack = slack_for(queries) if slack is None else slack
        size = max(W, widest) if widest else W + self.slack
        self.queries = queries.new_zeros(B, H, size, D)  # read whole by ring(): no NaN of unwritten memory
        self.positions = positions.new_full((B, size), -1)
        self.queries[:, :, :W], self.positions[:, :W] = queries, positions
        self.count = W          # queries held, at most the buffer's size
        self.slot = W % size    # where the next query goes
        self.unwritten = 0      # single queries appended whose positions are not written yet
        self.newest = None      # [B, 1] the position of the newest of them

    @property
    def size(self) -> int:
        return self.queries.shape[2]

    def append(self, queries: torch.Tensor, positions: torch.Tensor, width: int) -> None:
        """Add t queries [B, H, t, D] (positions [B, t]); keep at least the last `width`.

        One query at a time (decode) is one write: its position is only remembered, and written with
        those of the queries before it when the buffer is read or grows. That relies on what decoding
        does: each row's next query sits one position after its previous one.
        """
        t = queries.shape[2]
        if not self.fits(width):
            self._grow(width + self.slack)
        if t == 1:
            self.queries[:, :, self.slot:self.slot + 1] = queries
            self.advance(positions)
            return
        self._write_positions()
        index = torch.arange(self.slot, self.slot + t, device=self.queries.device) % self.size
        self.queries.index_copy_(2, index, queries)
        self.positions.index_copy_(1, index, positions)
        self.count, self.slot = min(self.count + t, self.size), (self.slot + t) % self.size

    def fits(self, width: int) -> bool:
        """Whether the buffer holds a window of `width` queries: the step graph writes into it in place
        (step_graphs.py), and only append() can replace a buffer the window has outgrown."""
        return width <= self.size

    def advance(self, positions: torch.Tensor) -> None:
        """One more query held, its positions [B, 1] remembered (written with the others when read)."""
        self.count, self.slot = min(self.count + 1, self.size), (self.slot + 1) % self.size
        self.unwritten, self.newest = self.unwritten + 1, positions

    def ring(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole buffer as it lies: queries [B, H, size, D] and positions [B, size], the oldest query at
        `slot` once the ring is full (before that, at 0; the slots not yet written hold zeros and position
        -1). Scoring reads it so, with each voter's weight placed at its slot (PyramidPolicy.ring_weights),
        where a window in order would be a copy whenever it wraps around the end."""
        self._write_positions()
        return self.queries, self.positions

    def view(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `width` queries [B, H, width, D] and positions [B, width], oldest first (fewer if fewer
        are held): views of the buffer, or a copy where they wrap around its end."""
        self._write_positions()
        n = min(width, self.count)
        start = (self.slot - n) % self.size
        if start + n <= self.size:
            return self.queries[:, :, start:start + n], self.positions[:, start:start + n]
        return (torch.cat((self.queries[:, :, start:], self.queries[:, :, :self.slot]), dim=2),
                torch.cat((self.positions[:, start:], self.positions[:, :self.slot]), dim=1))

    def _write_positions(self) -> None:
        """The positions of the single queries appended since the last write: one after another in each
        row, up to the newest (two small kernels, where a write at every append cost one per step)."""
        if not self.unwritten:
            return
        n = min(self.unwritten, self.size)  # older ones were overwritten
        back = torch.arange(n - 1, -1, -1, device=self.positions.device)  # how far before the newest
        start, positions = (self.slot - n) % self.size, self.newest - back
        head = min(n, self.size - start)  # the stretch up to the buffer's end, then the rest from its front
        self.positions[:, start:start + head] = positions[:, :head]
        if head < n:
            self.positions[:, :n - head] = positions[:, head:]
        self.unwritten, self.newest = 0, None

    def _grow(self, size: int) -> None:
        """Move the queries held, oldest first, to the front of new buffers of `size` slots."""
        queries, positions = self.view(self.count)
        B, H, _, D = self.queries.shape
        self.queries = self.queries.new_zeros(B, H, size, D)
        self.positions = self.positions.new_full((B, size), -1)
        self.queries[:, :, :self.count], self.positions[:, :self.count] = queries, positions
        self.slot = self.count % size
