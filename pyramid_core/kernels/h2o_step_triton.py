"""Triton kernels for H2O's slot-indexed decode step (CUDA only; imported lazily by h2o_step.py).

Two launches per layer and step, where the position-indexed path took about ten (two scoring kernels,
the scatter into a per-position buffer, the gather back, the recent-window mask and small ops):
1. `h2o_lse_fwd_kernel`, one program per (KV head, row, chunk of CHUNK slots): for the query heads of
   that KV group, the max and the sum of exp over the chunk's visible keys (split like flash-decoding,
   so a batch-1 step at 8k slots still fills the GPU).
2. `h2o_step_fwd_kernel`, one program per (block of BT slots, row): combines the chunks into each head's
   log-sum-exp, recomputes the block's logits for every head, sums the probabilities over heads, then
   updates the block's slot scores in place (restarting a slot whose position changed), records the
   positions, and writes the Evict's scores (inf for empty and recent slots). Each slot is read and
   written by exactly one program, its loads before a barrier and its stores after it (a program may
   hold a slot in several threads: recurformer/step_triton.py tells how that went wrong).
Keys and positions are read through their strides: the cache hands over views of larger buffers, and
a copy of the keys per step would cost more than the kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

CHUNK = 256  # slots per program of the first kernel
# float32 keys are multiplied in float32, as the twin does (Triton's default rounds them to TF32, 1e-4
# off); bfloat16 and float16 keys ignore it
DOT_PRECISION = tl.constexpr("ieee")
BT = 64      # slots per program of the second


# T, NS and the strides change with the layer's length and capacity: specialising on them would recompile
@triton.jit(do_not_specialize=["T", "NS", "s_kb", "s_kh", "s_kt", "s_pb"])
def h2o_lse_fwd_kernel(q, q_pos, k, k_pos, m_out, s_out, scale, T, NS, s_kb, s_kh, s_kt, s_pb,
                       H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BG: tl.constexpr,
                       BT: tl.constexpr, CHUNK: tl.constexpr):
    i_kv, i_b, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b64 = i_b.to(tl.int64)
    o_g = tl.arange(0, BG)
    m_g = o_g < G
    o_h = i_kv * G + o_g
    o_d = tl.arange(0, D)
    b_q = tl.load(q + (i_b64 * H + o_h[:, None]) * D + o_d[None, :], mask=m_g[:, None], other=0.0)
    b_qpos = tl.load(q_pos + i_b64)
    b_m = tl.full([BG], float("-inf"), tl.float32)
    b_s = tl.zeros([BG], tl.float32)
    for t0 in range(0, CHUNK, BT):
        o_t = i_s * CHUNK + t0 + tl.arange(0, BT)
        m_t = o_t < T
        p_k = k + i_b64 * s_kb + i_kv * s_kh + o_t[:, None].to(tl.int64) * s_kt + o_d[None, :]
        b_k = tl.load(p_k, mask=m_t[:, None], other=0.0)
        b_kpos = tl.load(k_pos + i_b64 * s_pb + o_t, mask=m_t, other=-1)
        m_vis = (b_kpos >= 0) & ((b_kpos <= b_qpos) | (b_qpos < 0)) & m_t
        b_logit = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(tl.float32) * scale  # [BG, BT]
        b_logit = tl.where(m_vis[None, :], b_logit, float("-inf"))
        b_new = tl.maximum(b_m, tl.max(b_logit, axis=1))
        b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
        b_s = b_s * tl.exp(b_m - b_safe) + tl.sum(tl.exp(b_logit - b_safe[:, None]), axis=1)
        b_m = b_new
    p_out = (i_b64 * H + o_h) * NS + i_s
    tl.store(m_out + p_out, b_m, mask=m_g)
    tl.store(s_out + p_out, b_s, mask=m_g)


@triton.jit(do_not_specialize=["T", "NS", "s_kb", "s_kh", "s_kt", "s_pb", "s_sb", "s_lb"])
def h2o_step_fwd_kernel(q, q_pos, k, k_pos, m_in, s_in, scores, last_pos, last_old, out, scale, T, NS,
                        s_kb, s_kh, s_kt, s_pb, s_sb, s_lb, H: tl.constexpr, G: tl.constexpr,
                        D: tl.constexpr, BG: tl.constexpr, BT: tl.constexpr, BNS: tl.constexpr):
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    i_b64 = i_b.to(tl.int64)
    o_t = i_t * BT + tl.arange(0, BT)
    m_t = o_t < T
    o_g = tl.arange(0, BG)
    m_g = o_g < G
    o_d = tl.arange(0, D)
    o_s = tl.arange(0, BNS)
    m_gs = m_g[:, None] & (o_s < NS)[None, :]
    b_qpos = tl.load(q_pos + i_b64)
    b_kpos = tl.load(k_pos + i_b64 * s_pb + o_t, mask=m_t, other=-1)
    m_vis = (b_kpos >= 0) & ((b_kpos <= b_qpos) | (b_qpos < 0)) & m_t
    b_acc = tl.zeros([BT], tl.float32)
    for i_kv in range(0, H // G):
        o_h = i_kv * G + o_g
        # each head's log-sum-exp from its chunks; a head that sees nothing gets inf and adds 0
        p_part = (i_b64 * H + o_h[:, None]) * NS + o_s[None, :]
        b_pm = tl.load(m_in + p_part, mask=m_gs, other=float("-inf"))
        b_ps = tl.load(s_in + p_part, mask=m_gs, other=0.0)
        b_max = tl.max(b_pm, axis=1)
        b_safe = tl.where(b_max == float("-inf"), 0.0, b_max)
        b_sum = tl.sum(b_ps * tl.exp(b_pm - b_safe[:, None]), axis=1)
        b_lse = tl.where(b_sum > 0, b_safe + tl.log(tl.where(b_sum > 0, b_sum, 1.0)), float("inf"))
        b_q = tl.load(q + (i_b64 * H + o_h[:, None]) * D + o_d[None, :], mask=m_g[:, None], other=0.0)
        p_k = k + i_b64 * s_kb + i_kv * s_kh + o_t[:, None].to(tl.int64) * s_kt + o_d[None, :]
        b_k = tl.load(p_k, mask=m_t[:, None], other=0.0)
        b_logit = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(tl.float32) * scale  # [BG, BT]
        b_p = tl.where(m_g[:, None] & m_vis[None, :], tl.exp(b_logit - b_lse[:, None]), 0.0)
        b_acc += tl.sum(b_p, axis=0)
    # the slot state: a slot whose position changed holds a new token and restarts from its attention
    p_score = scores + i_b64 * s_sb + o_t
    p_last = last_pos + i_b64 * s_lb + o_t
    b_last = tl.load(p_last, mask=m_t, other=-1)
    b_old = tl.load(p_score, mask=m_t, other=0.0)
    b_new = tl.where(b_kpos != b_last, 0.0, b_old) + b_acc / H
    # several threads may hold a slot's copy (a [BT] vector is smaller than the program): all load first
    tl.debug_barrier()
    tl.store(p_score, b_new, mask=m_t)
    tl.store(p_last, b_kpos, mask=m_t)
    b_cut = tl.load(last_old + i_b64)  # newest position outside the recent window
    b_evict = tl.where((b_kpos > b_cut) | (b_kpos < 0), float("inf"), b_new)
    tl.store(out + i_b64 * T + o_t, b_evict, mask=m_t)


def h2o_step_triton(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                    scores: torch.Tensor, last_positions: torch.Tensor, last_old: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Same contract as h2o_step.h2o_step_torch: queries [B, H, 1, D], keys [B, H_kv, T, D] (a view with
    a unit stride over D), positions [B, T]; scores [B, T] float32 and last_positions [B, T] long with a
    unit stride over T, updated in place. Returns the Evict's scores [B, T] float32."""
    B, H, W, D = queries.shape
    H_kv, T = keys.shape[1], keys.shape[2]
    if W != 1 or D not in (16, 32, 64, 128, 256) or queries.dtype != keys.dtype:
        raise ValueError(f"the H2O step kernel takes one query per row, a power-of-two head_dim in [16, 256] "
                         f"and queries in the keys' dtype; got {W} queries, head_dim {D}, "
                         f"{queries.dtype} over {keys.dtype}")
    assert scores.dtype == torch.float32 and last_positions.dtype == torch.long, "h2o_step: slot state dtypes"
    assert scores.stride(1) == 1 and last_positions.stride(1) == 1, "h2o_step: slot state must be row-major"
    if keys.stride(3) != 1:
        keys = keys.contiguous()
    if positions.stride(1) != 1:
        positions = positions.contiguous()
    q = queries.reshape(B, H, D).contiguous()
    q_pos = query_pos.reshape(B).contiguous()
    cut = last_old.reshape(B).contiguous()
    G, NS = H // H_kv, triton.cdiv(T, CHUNK)
    BG, BNS = max(16, triton.next_power_of_2(G)), max(2, triton.next_power_of_2(NS))
    m_part = torch.empty(B, H, NS, dtype=torch.float32, device=q.device)
    s_part = torch.empty_like(m_part)
    out = torch.empty(B, T, dtype=torch.float32, device=q.device)
    warmup.first_time(("h2o_step", q.device, q.dtype, G, D, BNS))
    with launch_device(q):
        h2o_lse_fwd_kernel[(H_kv, B, NS)](
            q, q_pos, keys, positions, m_part, s_part, scale, T, NS,
            keys.stride(0), keys.stride(1), keys.stride(2), positions.stride(0),
            H=H, G=G, D=D, BG=BG, BT=BT, CHUNK=CHUNK)
        h2o_step_fwd_kernel[(triton.cdiv(T, BT), B)](
            q, q_pos, keys, positions, m_part, s_part, scores, last_positions, cut, out, scale, T, NS,
            keys.stride(0), keys.stride(1), keys.stride(2), positions.stride(0), scores.stride(0),
            last_positions.stride(0), H=H, G=G, D=D, BG=BG, BT=BT, BNS=BNS)
    return out
