"""PyramidInfer's voters as the attention rows they cast: each recent query's head-averaged probabilities over
a layer's newest slots, kept from the step that decoded it (the official code's stored rows).

A row is indexed by age: column a is the slot that was a-th newest when the row was written. Slots are only
ever appended at the newest end, and a cut removes slots older than every slot a later cut scores (a chunk
is made of slots that were inside the window at the cut before), so a slot that was a-th newest d steps ago
is (a + d)-th newest now, and an old row still reads the slots of the next chunk. Rows are `width` slots
wide, the widest window the ring holds plus the chunk: a cut scores at most its window and its chunk.

One ring for every layer, on each device where a layer lives ([L, B, size, width] float32: 0.2 GB at Table
1's 144 rows, where the queries they replace held 4.5 GB): all layers take a row at every step, at one
slot, so a whole-step graph (step_graphs.py) averages every layer's heads in one launch per device
(kernels/head_mean.py), from the logits and log-sum-exps that the decode kernel left.
"""

from __future__ import annotations

import torch

from ..kernels.head_mean import head_mean
from ..transfer import to_device

SLACK = 32  # spare voters a ring holds past its window when the request's length is not known


class VoterRows:
    """A ring of `size` voters a row over `num_layers` layers: voter i (the i-th query held, the prefill's
    window first) sits at slot i % size, and `clock[slot]` is row 0's tokens seen when its row was written
    (every row of a batch moves one token a step, so row 0's count dates every row's voter)."""

    def __init__(self, num_layers: int, batch: int, size: int, chunk: int, voters: int, seen: int):
        """A ring for the prefill's `voters` queries, cast at row 0's `seen` tokens; `chunk`: the policy's
        chunk_length, the slots past the window a cut scores."""
        self.num_layers, self.batch, self.chunk = num_layers, batch, chunk
        self.size, self.width = size, size + chunk
        self.devices: list[torch.device | None] = [None] * num_layers  # where each layer's voters live
        self.heads: list[int] = [0] * num_layers  # each layer's attending heads (0: no voters)
        self.rows: dict[torch.device, torch.Tensor] = {}  # [L, B, size, width + 1]: the last column stays 0
        # a step's per-head logits [L, B, H, width] (-inf for heads a layer lacks) and log-sum-exps [L, B, H]
        self.newest: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.share: dict[torch.device, torch.Tensor] = {}  # [L]: 1 / heads, 0 for a layer without voters
        self.slot_at: dict[torch.device, torch.Tensor] = {}  # [1] long: the current step's slot
        self.clock: list[int | None] = [seen] * voters + [None] * (size - voters)
        self.count, self.step_seen = voters, seen

    @property
    def slot(self) -> int:
        """The slot of the newest voter."""
        return (self.count - 1) % self.size

    def fits(self, window: int) -> bool:
        return window <= self.size

    def start(self, layer: int, rows: torch.Tensor, heads: int) -> None:
        """The prefill's voter rows of a layer, [B, W, width] (the mean of its `heads` heads), oldest first."""
        self.devices[layer], self.heads[layer] = rows.device, heads
        self.ring(layer)[:, :rows.shape[1], :self.width] = rows

    def ring(self, layer: int) -> torch.Tensor:
        """The layer's [B, size, width + 1] rows (made on its device at first use)."""
        device = self.devices[layer]
        if device not in self.rows:
            self.rows[device] = torch.zeros(self.num_layers, self.batch, self.size, self.width + 1, device=device)
        return self.rows[device][layer]

    def step(self, seen: int) -> int:
        """The slot of the decode step at which row 0 has seen `seen` tokens: the next one at a new step (the
        devices' slot_at follow)."""
        if seen != self.step_seen:
            self.count, self.step_seen = self.count + 1, seen
            self.clock[self.slot] = seen
            for at in self.slot_at.values():
                at.fill_(self.slot)
        return self.slot

    def newest_to(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, H, width], lse [B, H]): where the layer's attention writes its heads' logits over the
        newest slots and their log-sum-exp at a decode step (attention.py newest=). Made at the first decode
        step, when every layer's heads are known."""
        device = self.devices[layer]
        if device not in self.newest:
            L, B = self.num_layers, self.batch
            self.newest[device] = (torch.full((L, B, max(self.heads), self.width), float("-inf"), device=device),
                                   torch.zeros(L, B, max(self.heads), device=device))
            self.share[device] = to_device(torch.tensor([1 / h if h else 0.0 for h in self.heads]), device)
            self.slot_at[device] = torch.full((1,), self.slot, device=device)
        logits, lse = self.newest[device]
        return logits[layer, :, :self.heads[layer]], lse[layer, :, :self.heads[layer]]

    def binding(self) -> tuple:
        """Every tensor a step graph writes for the voters (a step's buffers made where they are not yet)."""
        for layer, device in enumerate(self.devices):
            if device is not None and device not in self.newest:
                self.newest_to(layer)
        return (*self.rows.values(), *(t for pair in self.newest.values() for t in pair), *self.slot_at.values())

    def take(self, layer: int) -> None:
        """The layer's row of the current step (the mean over heads of what newest_to received) into its slot."""
        device, at = self.devices[layer], slice(layer, layer + 1)
        self.newest_to(layer)
        logits, lse = self.newest[device]
        head_mean(logits[at], lse[at], self.share[device][at], self.rows[device][at], self.slot_at[device])

    def take_all(self) -> None:
        """Every layer's row of the current step into its slot, one launch per device (inside a step graph). A
        layer without voters writes zeros into rows nobody reads."""
        for device, (logits, lse) in self.newest.items():
            head_mean(logits, lse, self.share[device], self.rows[device], self.slot_at[device])

    def scores(self, layer: int, weights: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """[B, n] over the newest n slots, oldest first: the voters' rows weighted by weights [B, size] (0 for
        slots outside a row's window), each read where those slots have aged to (shifts [1, size, n])."""
        picked = self.ring(layer).gather(2, shifts.expand(self.batch, -1, -1))  # [B, size, n]
        return torch.bmm(weights[:, None, :], picked)[:, 0]

    def shifts(self, n: int, seen: int, device: torch.device) -> torch.Tensor:
        """[1, size, n] long on `device`: where in each voter's row the newest n slots (oldest first) lie now
        that row 0 has seen `seen` tokens; `width`, the zero column, for a slot the voter never saw (newer
        than it) or one past its row. Made on the device from the voters' ages alone (size ints copied): at
        8k tokens the index is ~1700 x 1700. The layers cutting at one step share it."""
        since = to_device([seen - c if c is not None else n + self.width for c in self.clock], device)
        at = torch.arange(n - 1, -1, -1, device=device)[None, :] - since[:, None]  # column j: (n-1-j)-th newest
        return at.masked_fill((at < 0) | (at >= self.width), self.width)[None]

    def grow(self, size: int) -> None:
        """A ring of `size` slots (and rows as much wider) holding the same voters, each at its slot in the
        larger ring: a window that outgrew an unplanned ring. A step graph holding the old one recaptures."""
        held = range(max(0, self.count - self.size), self.count)
        old_rows, old_size, old_width = self.rows, self.size, self.width
        self.size, self.width = size, size + self.chunk
        self.rows, self.newest, self.share, self.slot_at = {}, {}, {}, {}
        clock = [None] * size
        for i in held:
            clock[i % size] = self.clock[i % old_size]
        self.clock = clock
        for device, old in old_rows.items():
            layer = self.devices.index(device)
            self.ring(layer)  # the device's rows, larger
            for i in held:
                self.rows[device][:, :, i % size, :old_width] = old[:, :, i % old_size, :old_width]
