"""Triton kernel for kernels/rms_norm.py: one program a row, the whole row in registers (CUDA only)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device


@triton.jit
def rms_norm_kernel(x, w, out, eps, s_x, C: tl.constexpr, BC: tl.constexpr):
    i_r = tl.program_id(0).to(tl.int64)
    o_c = tl.arange(0, BC)
    b_x = tl.load(x + i_r * s_x + o_c, mask=o_c < C, other=0.0).to(tl.float32)
    b_w = tl.load(w + o_c, mask=o_c < C, other=0.0).to(tl.float32)
    b_inv = 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=0) / C + eps)
    tl.store(out + i_r * C + o_c, (b_x * b_inv * b_w).to(out.dtype.element_ty), mask=o_c < C)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    C = x.shape[-1]
    rows = x.reshape(-1, C)  # a view for the decode step's [B, 1, C]; its row stride is passed on
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    BC = triton.next_power_of_2(C)
    warmup.first_time(("rms_norm", x.device, x.dtype, C))  # Triton compiles per dtype and width
    with launch_device(x):
        rms_norm_kernel[(rows.shape[0],)](rows, weight, out, eps, rows.stride(0), C=C, BC=BC,
                                          num_warps=min(16, max(1, BC // 512)))
    return out
