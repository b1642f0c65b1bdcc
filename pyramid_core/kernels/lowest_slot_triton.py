"""Triton kernel for kernels/lowest_slot.py: a program per row, two passes over its slots (CUDA only)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

BLOCK = 1024  # slots a step of each pass: a layer holds up to ~8k at the benchmarks' longest prompts


# T and the strides change with the layer's length and capacity: specialising on them would recompile
@triton.jit(do_not_specialize=["T", "s_sb", "s_pb"])
def lowest_slot_kernel(scores, positions, out, T, s_sb, s_pb, HOLES: tl.constexpr, BT: tl.constexpr):
    """Pass 1: the row's lowest score (empty slots at inf with HOLES). Pass 2: among the slots at that score,
    the highest position (others count -1), the first such slot, as torch's argmax takes the first maximum."""
    i_b = tl.program_id(0).to(tl.int64)
    p_s, p_p = scores + i_b * s_sb, positions + i_b * s_pb
    b_low = tl.full([BT], float("inf"), tl.float32)
    for t0 in range(0, T, BT):
        o_t = t0 + tl.arange(0, BT)
        b_r = tl.load(p_s + o_t, mask=o_t < T, other=float("inf")).to(tl.float32)
        if HOLES:
            b_r = tl.where(tl.load(p_p + o_t, mask=o_t < T, other=0) < 0, float("inf"), b_r)
        b_low = tl.minimum(b_low, b_r)
    low = tl.min(b_low, axis=0)
    best = tl.full([1], -2, tl.int64)  # below every candidate's value (-1 at least)
    best_slot = tl.zeros([1], tl.int64)
    for t0 in range(0, T, BT):
        o_t = t0 + tl.arange(0, BT)
        m_t = o_t < T
        b_r = tl.load(p_s + o_t, mask=m_t, other=float("inf")).to(tl.float32)
        b_pos = tl.load(p_p + o_t, mask=m_t, other=-1).to(tl.int64)
        if HOLES:
            b_r = tl.where(b_pos < 0, float("inf"), b_r)
        b_val = tl.where(m_t, tl.where(b_r == low, b_pos, -1), -2)  # slots past T never win
        top = tl.max(b_val, axis=0)
        first = tl.min(tl.where(b_val == top, o_t, T), axis=0).to(tl.int64)
        better = top > best  # strictly: an earlier block keeps a tie, as argmax keeps the first maximum
        best_slot = tl.where(better, first, best_slot)
        best = tl.where(better, top, best)
    tl.store(out + i_b + tl.arange(0, 1), best_slot)


def lowest_slot_triton(scores: torch.Tensor, positions: torch.Tensor, holes: bool,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """scores [B, T] (any float dtype), positions [B, T]: each with a unit stride over T (views of wider
    buffers are fine). Writes [B] long slots into out (made here if None) and returns it."""
    B, T = scores.shape
    out = torch.empty(B, dtype=torch.long, device=scores.device) if out is None else out
    assert out.dtype == torch.long and out.is_contiguous(), "lowest_slot: out must be a contiguous long [B]"
    warmup.first_time(("lowest_slot", scores.device, scores.dtype, positions.dtype, holes))
    with launch_device(scores):
        lowest_slot_kernel[(B,)](scores, positions, out, T, scores.stride(0), positions.stride(0), HOLES=holes,
                                 BT=BLOCK, num_warps=4)
    return out
