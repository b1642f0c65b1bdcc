"""Triton kernel for rope_write.py: one program per (row, head) of the queries and per (row, KV head),
which rotates its vector (x cos + swapped halves x signed sin) and, for a KV head, stores the key, the value
and (once a row) the position into the row's slot. CUDA only; imported lazily by rope_write.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device


@triton.jit
def rope_write_kernel(q, k, v, cos, sin, keys, values, k_pos, slot, pos, q_out,
                      s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_cb, s_sb, s_cacheb, s_cacheh, s_cachet,
                      s_valb, s_valh, s_valt, s_pb, H: tl.constexpr, D: tl.constexpr):
    i_b, i_h = tl.program_id(0), tl.program_id(1)
    i_b64 = i_b.to(tl.int64)
    o_d = tl.arange(0, D)
    o_swap = (o_d + D // 2) % D  # rotate_half: the other half, its sign folded into the signed sin
    b_cos = tl.load(cos + i_b64 * s_cb + o_d).to(tl.float32)
    b_sin = tl.load(sin + i_b64 * s_sb + o_d).to(tl.float32)
    if i_h < H:
        p_q = q + i_b64 * s_qb + i_h * s_qh
        b_q = tl.load(p_q + o_d).to(tl.float32) * b_cos + tl.load(p_q + o_swap).to(tl.float32) * b_sin
        tl.store(q_out + (i_b64 * H + i_h) * D + o_d, b_q.to(q_out.dtype.element_ty))
    else:
        i_kv = i_h - H
        b_slot = tl.load(slot + i_b64).to(tl.int64)
        p_k = k + i_b64 * s_kb + i_kv * s_kh
        b_k = tl.load(p_k + o_d).to(tl.float32) * b_cos + tl.load(p_k + o_swap).to(tl.float32) * b_sin
        tl.store(keys + i_b64 * s_cacheb + i_kv * s_cacheh + b_slot * s_cachet + o_d, b_k.to(keys.dtype.element_ty))
        b_v = tl.load(v + i_b64 * s_vb + i_kv * s_vh + o_d)
        tl.store(values + i_b64 * s_valb + i_kv * s_valh + b_slot * s_valt + o_d, b_v)
        if i_kv == 0:
            tl.store(k_pos + i_b64 * s_pb + b_slot + tl.arange(0, 1), tl.load(pos + i_b64 + tl.arange(0, 1)))


def rope_write_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope, keys: torch.Tensor,
                      values: torch.Tensor, k_pos: torch.Tensor, slot: torch.Tensor,
                      positions: torch.Tensor) -> torch.Tensor:
    """See rope_write_torch: q [B, H, 1, D], k, v [B, H_kv, 1, D] (views with a contiguous last dim); the
    layer's keys, values [B, H_kv, T, D] and k_pos [B, T]; slot [B]; positions [B, 1]."""
    B, H, _, D = q.shape
    H_kv = k.shape[1]
    cos, sin = (t.expand(B, 1, 1, D) for t in rope)
    assert min(t.stride(-1) for t in (q, k, v, keys, values, cos, sin)) == 1, "rope_write: last dim must be contiguous"
    assert k_pos.stride(1) == 1
    q_out = torch.empty(B, H, 1, D, dtype=q.dtype, device=q.device)
    warmup.first_time(("rope_write", q.device, q.dtype, H, D))  # per dtype and constexprs
    with launch_device(q):
        rope_write_kernel[(B, H + H_kv)](
            q, k, v, cos, sin, keys, values, k_pos, slot.contiguous(), positions.reshape(B).contiguous(), q_out,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0),
            sin.stride(0), keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1),
            values.stride(2), k_pos.stride(0), H=H, D=D, num_warps=1)
    return q_out
