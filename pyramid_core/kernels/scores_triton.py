"""Triton kernel for recent-window attention scores (CUDA only; imported lazily by scores.py).

Two passes, no [W, T] matrix in memory:
1. `recent_lse_fwd_kernel`, one program per (w-block, head, row): the log-sum-exp of each voter's
   logits over every visible key (online max/sum over key blocks).
2. `recent_scores_fwd_kernel`, one program per (key-block, head, row): for every voter block, recompute
   the logits of that key block, turn them into probabilities with the stored lse, and sum them weighted
   by the voters' weights into the head's own row of a [B, H, T] buffer, which a mean over the heads
   ends (each element written by exactly one program: no atomics, the same sum at every run). Only the
   key blocks of the slots asked for run: PyramidInfer's decode cut scores its newest ~80 slots of up to
   ~600 (0.69 -> 0.40 ms a layer at Table 1's 134 rows, H200, 2026-12-02). A program per (key-block,
   row) walking all 40 heads made only ~270 programs there, two waves on 132 SMs of serial work.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

# most voters a program holds: Table 1's ~77 in one block, 1.3-1.6x faster than two of 64 at 200-640 slots
# (benchmarks/cut_kernels_sweep_2026-12-02.json); the first pass's warps likewise (8 were slower at 128)
VOTER_BLOCK = 128
LSE_WARPS = 4


# W and T change with every prompt and layer: specialising on them would recompile the kernels constantly
@triton.jit(do_not_specialize=["W", "T"])
def recent_lse_fwd_kernel(q, q_pos, k, k_pos, lse, scale, W, T, H, s_qb, s_qh, s_qw, s_kb, s_kh, s_kt,
                          G: tl.constexpr, D: tl.constexpr, BW: tl.constexpr, BT: tl.constexpr):
    i_w, i_h, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b64 = i_b.to(tl.int64)
    o_w = i_w * BW + tl.arange(0, BW)
    o_d = tl.arange(0, D)
    m_w = o_w < W
    p_q = q + i_b64 * s_qb + i_h.to(tl.int64) * s_qh + o_w[:, None] * s_qw + o_d[None, :]
    b_q = tl.load(p_q, mask=m_w[:, None], other=0.0)
    b_qpos = tl.load(q_pos + i_b64 * W + o_w, mask=m_w, other=-1)
    b_m = tl.full([BW], float("-inf"), tl.float32)
    b_s = tl.zeros([BW], tl.float32)
    i_kv = i_h // G
    for t0 in range(0, T, BT):
        o_t = t0 + tl.arange(0, BT)
        m_t = o_t < T
        p_k = k + i_b64 * s_kb + i_kv.to(tl.int64) * s_kh + o_t[:, None] * s_kt + o_d[None, :]
        b_k = tl.load(p_k, mask=m_t[:, None], other=0.0)
        b_kpos = tl.load(k_pos + i_b64 * T + o_t, mask=m_t, other=-1)
        b_logit = tl.dot(b_q, tl.trans(b_k)).to(tl.float32) * scale
        m_vis = (b_kpos[None, :] >= 0) & ((b_kpos[None, :] <= b_qpos[:, None]) | (b_qpos[:, None] < 0))
        m_vis = m_vis & m_t[None, :]
        b_logit = tl.where(m_vis, b_logit, float("-inf"))
        b_new = tl.maximum(b_m, tl.max(b_logit, axis=1))
        b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
        b_s = b_s * tl.exp(b_m - b_safe) + tl.sum(tl.exp(b_logit - b_safe[:, None]), axis=1)
        b_m = b_new
    b_lse = tl.where(b_s > 0, b_m + tl.log(b_s), float("inf"))  # a row that sees nothing adds 0
    tl.store(lse + (i_b64 * H + i_h) * W + o_w, b_lse, mask=m_w)


@triton.jit(do_not_specialize=["W", "T", "T0"])
def recent_scores_fwd_kernel(q, q_pos, k, k_pos, lse, weights, out, scale, W, T, T0, H, s_qb, s_qh, s_qw,
                             s_kb, s_kh, s_kt, G: tl.constexpr, D: tl.constexpr, BW: tl.constexpr,
                             BT: tl.constexpr):
    """One head's share of the scores of the slots [T0, T) into out [B, H, T - T0]."""
    i_t, i_h, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)  # a head's offset in a long cache may pass 2**31
    o_t = T0 + i_t * BT + tl.arange(0, BT)
    o_d = tl.arange(0, D)
    m_t = o_t < T
    b_kpos = tl.load(k_pos + i_b64 * T + o_t, mask=m_t, other=-1)
    p_k = k + i_b64 * s_kb + (i_h64 // G) * s_kh + o_t[:, None] * s_kt + o_d[None, :]
    b_k = tl.load(p_k, mask=m_t[:, None], other=0.0)
    b_acc = tl.zeros([BT], tl.float32)
    for w0 in range(0, W, BW):
        o_w = w0 + tl.arange(0, BW)
        m_w = o_w < W
        p_q = q + i_b64 * s_qb + i_h64 * s_qh + o_w[:, None] * s_qw + o_d[None, :]
        b_q = tl.load(p_q, mask=m_w[:, None], other=0.0)
        b_qpos = tl.load(q_pos + i_b64 * W + o_w, mask=m_w, other=-1)
        b_lse = tl.load(lse + (i_b64 * H + i_h64) * W + o_w, mask=m_w, other=float("inf"))
        b_wt = tl.load(weights + i_b64 * W + o_w, mask=m_w, other=0.0)
        b_logit = tl.dot(b_q, tl.trans(b_k)).to(tl.float32) * scale
        m_vis = (b_kpos[None, :] >= 0) & ((b_kpos[None, :] <= b_qpos[:, None]) | (b_qpos[:, None] < 0))
        b_p = tl.where(m_vis & m_t[None, :], tl.exp(b_logit - b_lse[:, None]), 0.0)
        b_acc += tl.sum(b_p * b_wt[:, None], axis=0)
    tl.store(out + (i_b64 * H + i_h64) * (T - T0) + o_t - T0, b_acc, mask=m_t)


def recent_attention_scores_triton(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                                   key_pos: torch.Tensor, weights: torch.Tensor, scale: float,
                                   last: int | None = None) -> torch.Tensor:
    """Same contract as scores.recent_attention_scores_torch: queries [B, H, W, D], keys [B, H_kv, T, D]."""
    B, H, W, D = queries.shape
    H_kv, T = keys.shape[1], keys.shape[2]
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"the Triton scorer needs a power-of-two head_dim in [16, 256], got {D}")
    # read through the strides: the cache hands over keys[:, :, :T] of a longer buffer and the voters
    # are a window of theirs, so contiguous() copied both (the whole layer's keys) at every cut
    q, k = last_dim_contiguous(queries), last_dim_contiguous(keys)
    q_pos, k_pos = query_pos.contiguous(), key_pos.contiguous()
    wts = weights.float().contiguous()
    lse = torch.empty(B, H, W, dtype=torch.float32, device=q.device)
    T0 = T - (T if last is None else last)
    per_head = torch.empty(B, H, T - T0, dtype=torch.float32, device=q.device)
    BW = min(VOTER_BLOCK, max(16, triton.next_power_of_2(W)))
    BT = 64 if D <= 128 else 32
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    # the first launch of each compiled variant is warm-up (the key's limits: decode_triton.py)
    warmup.first_time(("recent_scores", q.device, q.dtype, k.dtype, H // H_kv, D, BW, BT, LSE_WARPS))
    with launch_device(q):
        recent_lse_fwd_kernel[(triton.cdiv(W, BW), H, B)](
            q, q_pos, k, k_pos, lse, scale, W, T, H, *strides, G=H // H_kv, D=D, BW=BW, BT=BT,
            num_warps=LSE_WARPS)
        recent_scores_fwd_kernel[(triton.cdiv(T - T0, BT), H, B)](
            q, q_pos, k, k_pos, lse, wts, per_head, scale, W, T, T0, H, *strides, G=H // H_kv, D=D, BW=BW, BT=BT)
    return per_head.mean(1)


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x itself when its last dim is contiguous (the kernels take the other strides), else a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()
