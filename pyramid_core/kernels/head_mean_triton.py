"""Triton kernel for kernels/head_mean.py: a program per (layer x row, block of slots), summing its heads in
a loop (CUDA only; imported lazily)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

BLOCK = 128


@triton.jit(do_not_specialize=["B", "N"])
def head_mean_kernel(logits, lse, share, rows, slot, B, N, s_ll, s_lb, s_lh, s_el, s_eb, s_rl, s_rb, s_rs,
                     H: tl.constexpr, BN: tl.constexpr):
    i_lb, i_n = tl.program_id(0), tl.program_id(1)
    i_l, i_b = (i_lb // B).to(tl.int64), (i_lb % B).to(tl.int64)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    b_sum = tl.zeros([BN], tl.float32)
    for i_h in range(H):
        b_lse = tl.load(lse + i_l * s_el + i_b * s_eb + i_h)
        b_s = tl.load(logits + i_l * s_ll + i_b * s_lb + i_h * s_lh + o_n, mask=m_n, other=float("-inf"))
        b_sum += tl.exp(b_s - b_lse)
    at = tl.load(slot)
    tl.store(rows + i_l * s_rl + i_b * s_rb + at * s_rs + o_n, b_sum * tl.load(share + i_l), mask=m_n)


def head_mean_triton(logits: torch.Tensor, lse: torch.Tensor, share: torch.Tensor, rows: torch.Tensor,
                     slot: torch.Tensor) -> None:
    L, B, H, N = logits.shape
    assert logits.stride(3) == lse.stride(2) == rows.stride(3) == 1, "head_mean: last dims must be contiguous"
    warmup.first_time(("head_mean", logits.device, H))  # Triton compiles per constexpr
    with launch_device(logits):
        head_mean_kernel[(L * B, triton.cdiv(N, BLOCK))](
            logits, lse, share, rows, slot, B, N, logits.stride(0), logits.stride(1), logits.stride(2),
            lse.stride(0), lse.stride(1), rows.stride(0), rows.stride(1), rows.stride(2), H=H, BN=BLOCK, num_warps=4)
