"""Triton kernels for kernels/rms_norm.py: one program a row, the whole row in registers (CUDA only)."""

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


@triton.jit
def add_rms_norm_kernel(h, y, w, total, out, eps, s_h, s_y, C: tl.constexpr, BC: tl.constexpr):
    i_r = tl.program_id(0).to(tl.int64)
    o_c = tl.arange(0, BC)
    m_c = o_c < C
    b_h = tl.load(h + i_r * s_h + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_y = tl.load(y + i_r * s_y + o_c, mask=m_c, other=0.0).to(tl.float32)
    # the sum rounded to the model's dtype, as torch's add stores it, before the norm reads it
    b_t = (b_h + b_y).to(total.dtype.element_ty)
    tl.store(total + i_r * C + o_c, b_t, mask=m_c)
    b_x = b_t.to(tl.float32)
    b_w = tl.load(w + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_inv = 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=0) / C + eps)
    tl.store(out + i_r * C + o_c, (b_x * b_inv * b_w).to(out.dtype.element_ty), mask=m_c)


def add_rms_norm_triton(h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    C = h.shape[-1]
    h_rows, y_rows = h.reshape(-1, C), y.reshape(-1, C)
    total, out = (torch.empty(h.shape, dtype=h.dtype, device=h.device) for _ in range(2))
    BC = triton.next_power_of_2(C)
    warmup.first_time(("add_rms_norm", h.device, h.dtype, C))
    with launch_device(h):
        add_rms_norm_kernel[(h_rows.shape[0],)](h_rows, y_rows, weight, total, out, eps, h_rows.stride(0),
                                                y_rows.stride(0), C=C, BC=BC, num_warps=min(16, max(1, BC // 512)))
    return total, out
