"""A layer's most recent queries, kept for decode-time scoring (PyramidInfer's voters)."""

from __future__ import annotations

import torch

SPARE_BYTES = 4 << 20  # spare room a layer's buffer may hold
MIN_SLACK, MAX_SLACK = 32, 512


def slack_for(queries: torch.Tensor) -> int:
    """Spare slots for a buffer of queries [B, H, W, D]: as many as SPARE_BYTES hold, within
    [MIN_SLACK, MAX_SLACK]. Each move is ~7 small kernels a layer; with 32 slots on the embedded model at
    batch 1 they were ~4 launches a decode step, ~10% of a step that the host bounds (H200, 2026-12-01),
    while at batch 128 on the 13B shape one slot is 1.3 MB a layer and 32 already cost 1.7 GB."""
    B, H, _, D = queries.shape
    per_slot = B * H * D * queries.element_size() + B * 8  # a query a row and its int64 position
    return max(MIN_SLACK, min(MAX_SLACK, SPARE_BYTES // per_slot))


class RecentQueries:
    """A layer's most recent queries (after RoPE) and their positions, for decode-time scoring.

    Appending writes in place into a buffer with `slack` spare slots; when they run out, the last
    `width` queries move to the buffer's front (growing it if the window has grown). Concatenating at
    every step instead copied the whole window every step: a quarter of a decode step at batch 128 on
    the Llama-2-13B shape (H200, 2026-11-26).
    """

    def __init__(self, queries: torch.Tensor, positions: torch.Tensor, slack: int | None = None,
                 widest: int | None = None):
        """Start from a prefill's last queries [B, H, W, D] and positions [B, W] (copied); `slack` spare
        slots (None: slack_for). widest: the widest window the request will keep, when it is known (a planned
        generation): the buffer holds it and the slack from the start and never grows. A buffer that grows
        mid-generation holds its old one too while the step graph binds it: at Table 1's 134 rows every
        layer's voters grew at one step, and that step set the run's peak (+3.5 GB, H200, 2026-12-02)."""
        B, H, W, D = queries.shape
        self.slack = slack_for(queries) if slack is None else slack
        size = max(W, widest or 0) + self.slack
        self.queries = queries.new_empty(B, H, size, D)
        self.positions = positions.new_full((B, size), -1)
        self.queries[:, :, :W], self.positions[:, :W] = queries, positions
        self.length = W
        self.unwritten = 0    # single queries appended whose positions are not written yet
        self.newest = None    # [B, 1] the position of the newest of them

    def append(self, queries: torch.Tensor, positions: torch.Tensor, width: int) -> None:
        """Add t queries [B, H, t, D] (positions [B, t]); keep at least the last `width`.

        One query at a time (decode) is one write: its position is only remembered, and written with
        those of the queries before it when the buffer is read or moved. That relies on what decoding
        does: each row's next query sits one position after its previous one.
        """
        t = queries.shape[2]
        if t == 1 and self.has_room():
            self.queries[:, :, self.length:self.length + 1] = queries
            self.advance(positions)
            return
        self._write_positions()
        if self.length + t > self.queries.shape[2]:
            keep = min(width, self.length)
            self._move_to_front(keep, keep + t + self.slack if self._outgrown(width, t) else None)
        self.queries[:, :, self.length:self.length + t] = queries
        self.positions[:, self.length:self.length + t] = positions
        self.length += t

    def has_room(self) -> bool:
        """Whether one more query fits without moving the buffer."""
        return self.length < self.queries.shape[2]

    def make_room(self, width: int) -> bool:
        """Room for one more query in the same buffers, moving the last `width` to the front if it is
        full, as append() would: the step graph keeps writing into them (step_graphs.py). False when the
        window has outgrown the buffer, which only append() can replace."""
        if self.has_room():
            return True
        if self._outgrown(width, 1):
            return False
        self._write_positions()
        self._move_to_front(min(width, self.length), None)
        return True

    def _outgrown(self, width: int, t: int) -> bool:
        return min(width, self.length) + t + self.slack // 2 > self.queries.shape[2]

    def _move_to_front(self, keep: int, new_size: int | None) -> None:
        """The last `keep` queries to the front: of new buffers of new_size slots, or (None) of the same."""
        recent = (self.queries[:, :, self.length - keep:self.length].clone(),
                  self.positions[:, self.length - keep:self.length].clone())
        if new_size is not None:  # the window has grown
            B, H, _, D = self.queries.shape
            self.queries = self.queries.new_empty(B, H, new_size, D)
            self.positions = self.positions.new_full((B, new_size), -1)
        self.queries[:, :, :keep], self.positions[:, :keep] = recent
        self.length = keep

    def advance(self, positions: torch.Tensor) -> None:
        """One more query held, its positions [B, 1] remembered (written with the others when read)."""
        self.length, self.unwritten, self.newest = self.length + 1, self.unwritten + 1, positions

    def _write_positions(self) -> None:
        """The positions of the single queries appended since the last write: one after another in each
        row, up to the newest (two small kernels, where a write at every append cost one per step)."""
        if not self.unwritten:
            return
        n = self.unwritten
        back = torch.arange(n - 1, -1, -1, device=self.positions.device)  # how far before the newest
        self.positions[:, self.length - n:self.length] = self.newest - back
        self.unwritten, self.newest = 0, None

    def view(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `width` queries [B, H, width, D] and positions [B, width] (fewer if fewer are held)."""
        self._write_positions()
        start = max(0, self.length - width)
        return self.queries[:, :, start:self.length], self.positions[:, start:self.length]


