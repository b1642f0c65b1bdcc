"""Each row's slot to evict: the lowest score, and among equal lowest scores the newest position; empty slots
(position -1) lose unless the row has nothing else. The cache's tie rule (cache.LayerCache.lowest_slot), as
device work only, so that a captured graph can repeat it.

torch spells it as five kernels (the minimum, a comparison, a select, the argmax and a copy into the slot the
graph reads back): ~9 us a layer at batch 1 on the 7B shape, ~0.3 ms of H2O's steady step
(benchmarks/step_graph_time_7b_1k_modes.json, H200, 2026-12-01). The Triton kernel (lowest_slot_triton.py)
does it in one launch, a program per row, and writes straight into the slot buffer; `lowest_slot_torch` is
its twin, what runs on a CPU, and the reference in the tests.
"""

from __future__ import annotations

import torch

from ..optional import importable


def lowest_slot_torch(scores: torch.Tensor, positions: torch.Tensor, holes: bool) -> torch.Tensor:
    """[B] each row's slot of lowest score, scores [B, T], positions [B, T] (-1: empty); holes: the row may
    hold empty slots, which are never chosen while it holds anything else."""
    ranked = scores.float()
    if holes:
        ranked = ranked.masked_fill(positions < 0, float("inf"))
    lowest = ranked.amin(1, keepdim=True)
    return torch.where(ranked == lowest, positions, -1).argmax(1)


def lowest_slot(scores: torch.Tensor, positions: torch.Tensor, holes: bool,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """As lowest_slot_torch; written into out [B] (long) when given, and returned."""
    if kernel_fits(scores, positions):
        from .lowest_slot_triton import lowest_slot_triton

        return lowest_slot_triton(scores, positions, holes, out)
    slot = lowest_slot_torch(scores, positions, holes)
    return slot if out is None else out.copy_(slot)


def kernel_fits(scores: torch.Tensor, positions: torch.Tensor) -> bool:
    return scores.is_cuda and scores.shape[1] > 0 and scores.stride(1) == 1 and positions.stride(1) == 1 \
        and importable("triton", "the evicted slot is picked with torch's kernels on the GPU")
