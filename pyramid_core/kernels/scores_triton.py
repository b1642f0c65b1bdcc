"""Triton kernel for recent-window attention scores (CUDA only; imported lazily by scores.py).

One program per (voter block, head, row), two passes over its keys and no [W, T] matrix in memory: first the
log-sum-exp of each voter's logits over every key it sees (online max and sum), then the voters'
probabilities weighted by their weights over H, summed into the program's own row of a [B, H, voter blocks,
T] buffer that one sum ends (each element written by exactly one program: no atomics, the same sum at every
run). The voters stay in registers between the passes. (Two kernels, the second one program per (key
block, head, row) reloading every voter, took 0.35 + 0.25 ms a layer at Table 1's 140 rows, H200,
2026-12-02, when PyramidInfer's decode cuts scored with it.) A block of voters that do not vote (weight 0)
writes zeros and reads nothing.

Logits are in base 2 (the scale carries log2 e): exp2 and log2 are what the hardware computes, and exp
multiplies by log2 e before it. A block of keys that every voter sees whole (valid slots, none newer than
the oldest voter) is not masked, which was half the arithmetic of a pass.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

# most voters a program holds, and its warps: Table 1's ~77 voters in one block of 128 on 4 warps took 0.42-0.66
# ms at 200-640 slots (140 rows), two blocks of 64 0.44-0.72, 8 warps no less (H200, 2026-12-02,
# benchmarks/cut_kernels_sweep_2026-12-02_fused.json)
VOTER_BLOCK = 128
WARPS = 4
NEWEST = tl.constexpr(2 ** 62)  # a position after every slot's: the oldest voter of a block without voters


@triton.jit
def visible_logits(b_q, b_qpos, q_oldest, p_k, p_kpos, t0, T, s_kt, scale, D: tl.constexpr, BT: tl.constexpr):
    """[BW, BT] logits (base 2) of the voters over the slots [t0, t0 + BT), -inf where a voter does not see
    a slot: an empty one, one past T, or one after the voter's position (a non-voter, -1, sees every valid
    slot; its weight is 0)."""
    o_t = t0 + tl.arange(0, BT)
    o_d = tl.arange(0, D)
    m_t = o_t < T
    b_kpos = tl.load(p_kpos + o_t, mask=m_t, other=-1)
    b_k = tl.load(p_k + o_t[:, None] * s_kt + o_d[None, :], mask=m_t[:, None], other=0.0)
    b_logit = tl.dot(b_q, tl.trans(b_k)).to(tl.float32) * scale
    if (tl.min(b_kpos, axis=0) < 0) | (tl.max(b_kpos, axis=0) > q_oldest):
        m_vis = (b_kpos[None, :] >= 0) & ((b_kpos[None, :] <= b_qpos[:, None]) | (b_qpos[:, None] < 0))
        b_logit = tl.where(m_vis, b_logit, float("-inf"))
    return b_logit


# W and T change with every prompt and layer: specialising on them would recompile the kernel constantly
@triton.jit(do_not_specialize=["W", "T"])
def recent_scores_kernel(q, q_pos, k, k_pos, weights, out, scale, W, T, H, s_qb, s_qh, s_qw, s_kb, s_kh,
                         s_kt, G: tl.constexpr, D: tl.constexpr, BW: tl.constexpr, BT: tl.constexpr):
    """Program (voter block, head, row): its voters' share of the scores of the T slots, their weighted
    probabilities divided by H (its part of the mean over heads), into out[b, h, voter block]."""
    i_w, i_h, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)  # a head's offset in a long cache may pass 2**31
    o_w = i_w * BW + tl.arange(0, BW)
    m_w = o_w < W
    p_q = q + i_b64 * s_qb + i_h64 * s_qh + o_w[:, None] * s_qw + tl.arange(0, D)[None, :]
    b_q = tl.load(p_q, mask=m_w[:, None], other=0.0)
    b_qpos = tl.load(q_pos + i_b64 * W + o_w, mask=m_w, other=-1)
    b_wt = tl.load(weights + i_b64 * W + o_w, mask=m_w, other=0.0)
    p_out = out + ((i_b64 * H + i_h64) * tl.num_programs(0) + i_w) * T
    if tl.max(tl.abs(b_wt), axis=0) == 0:  # no voter here: its share is 0, nothing to compute
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            tl.store(p_out + o_t, tl.zeros([BT], tl.float32), mask=o_t < T)
    else:
        q_oldest = tl.min(tl.where(b_qpos >= 0, b_qpos, NEWEST), axis=0)
        p_k, p_kpos = k + i_b64 * s_kb + (i_h64 // G) * s_kh, k_pos + i_b64 * T
        b_m = tl.full([BW], float("-inf"), tl.float32)
        b_s = tl.zeros([BW], tl.float32)
        for t0 in range(0, T, BT):
            b_logit = visible_logits(b_q, b_qpos, q_oldest, p_k, p_kpos, t0, T, s_kt, scale, D, BT)
            b_new = tl.maximum(b_m, tl.max(b_logit, axis=1))
            b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
            b_s = b_s * tl.exp2(b_m - b_safe) + tl.sum(tl.exp2(b_logit - b_safe[:, None]), axis=1)
            b_m = b_new
        b_lse = tl.where(b_s > 0, b_m + tl.log2(b_s), float("inf"))  # a voter that sees nothing adds 0
        b_wt = b_wt / H  # each head's share of the mean over heads
        for t0 in range(0, T, BT):
            b_logit = visible_logits(b_q, b_qpos, q_oldest, p_k, p_kpos, t0, T, s_kt, scale, D, BT)
            o_t = t0 + tl.arange(0, BT)
            b_p = tl.exp2(b_logit - b_lse[:, None])
            tl.store(p_out + o_t, tl.sum(b_p * b_wt[:, None], axis=0), mask=o_t < T)


def recent_attention_scores_triton(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                                   key_pos: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Same contract as scores.recent_attention_scores_torch: queries [B, H, W, D], keys [B, H_kv, T, D]."""
    B, H, W, D = queries.shape
    H_kv, T = keys.shape[1], keys.shape[2]
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"the Triton scorer needs a power-of-two head_dim in [16, 256], got {D}")
    # read through the strides: the cache hands over keys[:, :, :T] of a longer buffer, which contiguous()
    # would copy whole
    q, k = last_dim_contiguous(queries), last_dim_contiguous(keys)
    q_pos, k_pos = query_pos.contiguous(), key_pos.contiguous()
    wts = weights.float().contiguous()
    BW = min(VOTER_BLOCK, max(16, triton.next_power_of_2(W)))
    BT = 64 if D <= 128 else 32
    blocks = triton.cdiv(W, BW)
    per_block = torch.empty(B, H, blocks, T, dtype=torch.float32, device=q.device)
    # the first launch of each compiled variant is warm-up (the key's limits: decode_triton.py)
    warmup.first_time(("recent_scores", q.device, q.dtype, k.dtype, H // H_kv, D, BW, BT, WARPS))
    with launch_device(q):
        recent_scores_kernel[(blocks, H, B)](
            q, q_pos, k, k_pos, wts, per_block, scale * math.log2(math.e), W, T, H, q.stride(0), q.stride(1),
            q.stride(2), k.stride(0), k.stride(1), k.stride(2), G=H // H_kv, D=D, BW=BW, BT=BT, num_warps=WARPS)
    return per_block.sum((1, 2))


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x itself when its last dim is contiguous (the kernels take the other strides), else a copy."""
    return x if x.stride(-1) == 1 else x.contiguous()
