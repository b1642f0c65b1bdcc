"""Triton kernel for kernels/move_slots.py: a program per (row, KV head) moves its slots down in place."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

# slots a step and warps: a cut moves ~85 slots (its kept chunk and its recent window) at Table 1's 512 + 256,
# in 221 us at 140 rows with 8 warps against 256 with 4; blocks of 64 or 128 took 490-570 (H200, 2026-12-02,
# benchmarks/cut_kernels_sweep_2026-12-02_fused.json)
BLOCK = 32
WARPS = 8


# n and the strides change with every cut and capacity: specialising on them would recompile
@triton.jit(do_not_specialize=["n", "start", "s_kb", "s_kh", "s_vb", "s_vh"])
def move_slots_kernel(k, v, index, n, start, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, D: tl.constexpr,
                      BJ: tl.constexpr):
    """Blocks of slots in ascending order. A block reads slots at or after its own destinations (index[j] >=
    start + j), never ones an earlier block wrote; the barrier after its reads keeps a later block's writes
    (into slots this one may read) from passing any of this block's threads."""
    i_h, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    p_k, p_v = k + i_b * s_kb + i_h * s_kh, v + i_b * s_vb + i_h * s_vh
    o_d = tl.arange(0, D)
    for j0 in range(0, n, BJ):
        o_j = j0 + tl.arange(0, BJ)
        m_j = o_j < n
        src = tl.load(index + i_b * n + o_j, mask=m_j, other=0)
        b_k = tl.load(p_k + src[:, None] * s_kt + o_d[None, :], mask=m_j[:, None])
        b_v = tl.load(p_v + src[:, None] * s_vt + o_d[None, :], mask=m_j[:, None])
        tl.debug_barrier()
        dst = start + o_j
        tl.store(p_k + dst[:, None] * s_kt + o_d[None, :], b_k, mask=m_j[:, None])
        tl.store(p_v + dst[:, None] * s_vt + o_d[None, :], b_v, mask=m_j[:, None])


def move_slots_triton(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor, start: int) -> None:
    """keys, values [B, H, T, D] with a unit stride over D (views of wider buffers are fine); index [B, n]."""
    B, H, _, D = keys.shape
    index = index.contiguous()
    warmup.first_time(("move_slots", keys.device, keys.dtype, D))
    with launch_device(keys):
        move_slots_kernel[(H, B)](keys, values, index, index.shape[1], start, *keys.stride()[:3],
                                  *values.stride()[:3], D=D, BJ=BLOCK, num_warps=WARPS)
