"""Work on a second CUDA stream, beside the decode step's own.

A decode step at batch 1 is a chain of small kernels, each waiting for the one before. Some of them feed
nothing that the next ones read: RecurFormer's stack step needs the layer's projection, not its attention;
H2O's pick of the next slot to evict needs the attention's logits, not the MLP. Queued on a side stream
they run while the chain goes on, and inside a CUDA graph's capture (step_graphs.py) they become a branch
of the graph, so their kernels leave the step's critical path. On a CPU the work runs at once, in order.
"""

from __future__ import annotations

import os

import torch

# Read at import, as the fused steps' switches are (tests/test_fused_switches.py). PYRAMID_BESIDE=0: a step
# graph runs RecurFormer's stack step after attention and H2O's pick in line, on one stream.
BESIDE = os.environ.get("PYRAMID_BESIDE", "1") != "0"


class SideStream:
    """One side stream for a step: run(fn) queues fn after everything queued on the current stream so
    far; join() makes the current stream wait for all of it."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.device = device
        # each fn until join(): the tensors it reads were allocated on the current stream, and dropping
        # them early would let its allocator hand their memory out while the side stream may still read it
        self.held = []

    def run(self, fn) -> None:
        if self.stream is None:
            fn()
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            fn()
        self.held.append(fn)

    def join(self) -> None:
        """The current stream waits for the side's work, if any was run: inside a graph's capture, waiting
        on a stream that the capture never forked to is an error."""
        if self.stream is not None and self.held:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.held.clear()
