"""Triton kernel for kernels/silu_mul.py: a program per (row, block of columns) (CUDA only)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

BLOCK = 1024


@triton.jit
def silu_mul_kernel(gate_up, out, s_r, I, BI: tl.constexpr):
    i_r, i_c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o_c = i_c * BI + tl.arange(0, BI)
    m_c = o_c < I
    b_g = tl.load(gate_up + i_r * s_r + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_u = tl.load(gate_up + i_r * s_r + I + o_c, mask=m_c, other=0.0).to(tl.float32)
    tl.store(out + i_r * I + o_c, (b_g * tl.sigmoid(b_g) * b_u).to(out.dtype.element_ty), mask=m_c)


def silu_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    I = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * I)  # a view for the decode step's [B, 1, 2I]; its row stride is passed on
    out = torch.empty((*gate_up.shape[:-1], I), dtype=gate_up.dtype, device=gate_up.device)
    warmup.first_time(("silu_mul", gate_up.device, gate_up.dtype))  # Triton compiles per dtype
    with launch_device(gate_up):
        silu_mul_kernel[(rows.shape[0], triton.cdiv(I, BLOCK))](rows, out, rows.stride(0), I, BI=BLOCK,
                                                                num_warps=4)
    return out
