"""Triton kernel for StackedRNN's decode step: everything after the projection matmul in one launch
(CUDA only; imported lazily by stacked.py, whose PyTorch path, RNNHeads.step, is its twin).

Why: the twin's step is ~40 small kernels per layer (q/k norms, RoPE tables and rotation, the decay's
softplus, pad masks, k/v repeat, the state update and read-out, the taps' sort and gather, the output
norm), and on the Llama-2-7B shape with 25% of the groups replaced that cost ~125 us a layer on an H200
(issue 19). Here one program per (row, head) reads the projected row [W], applies the q/k norms and
RoPE, updates its head's D x D state in place and writes y = rmsnorm(q S) * out_weight + skip * v (+ taps).

Why (row, head) and not (row, group): a group's heads share only k and v, whose norm and rotation are
D-element work, while each head owns a D x D state, which is the traffic. Per group would divide the
programs by G (4 on the 1B shape) at batch 1, where there are only B x H of them anyway.

The state is walked in blocks of BK key rows: for each block, the rows of q and k it needs are
normalised and rotated (rotate-half pairs row i with i +- D/2, so both are loaded), S[rows] is decayed,
given k v^T, stored back, and q[rows] S[rows] is added to o. o is the full [D] vector after the last
block, so the output norm needs no second pass.

In-place updates wait at a barrier between their loads and their stores. Triton may hold a block in
several threads at once (a [D] vector has fewer elements than the program has threads, and a small
tile is replicated across warps), and one warp storing a state row before another has loaded it
corrupted the step on an H200 (tests/test_recurformer_step_kernel.py, head_dim 48 with taps, 2026-11-30);
the interpreter, which runs a program as one thread, cannot show it.

Precision: everything in float32, as the twin's scan. The twin also rounds some intermediates to the
model dtype (normed and rotated q and k, the taps term); with bfloat16 the two differ at that rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import warmup
from ..kernels.decode_triton import launch_device

# key rows per block of the state loop, and warps: the best of 16/32/64 x 2/4/8 in the sweep of
# benchmarks/rnn_step_kernel.json (H200, 2026-11-30, the kernel alone in a CUDA graph): on the 7B shape's 8 heads
# 5.0-6.0 us a layer against 9.3-9.8 for the first guess of 32 x 4, on the 1B shape's 3.1-5.2 against 4.3-5.1; the
# fastest or within 0.4 us of it in all 16 cases. (In the engine's 7B step the kernel took 11.8 us a layer at
# 32 x 4: step_graph_time_7b_1k_modes.json.)
BLOCK_K = 64
NUM_WARPS = 2


@triton.jit
def _normed_roped(p_x, p_w, o_k, m_k, b_r, b_p, inv_freq, rope_scaling, D: tl.constexpr, NORM: tl.constexpr):
    """Rows o_k of x (a [D] head vector of the projected row) after its RMS norm (reciprocal RMS b_r and
    weight p_w, when NORM) and RoPE at position b_p, in float32."""
    HALF: tl.constexpr = D // 2
    o_r = tl.where(o_k < HALF, o_k + HALF, o_k - HALF)  # rotate-half's partner row
    b_x = tl.load(p_x + o_k, mask=m_k, other=0.0).to(tl.float32) * b_r
    b_xr = tl.load(p_x + o_r, mask=m_k, other=0.0).to(tl.float32) * b_r
    if NORM:
        b_x = b_x * tl.load(p_w + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_xr = b_xr * tl.load(p_w + o_r, mask=m_k, other=0.0).to(tl.float32)
    b_xr = tl.where(o_k < HALF, -b_xr, b_xr)
    b_f = b_p * tl.load(inv_freq + o_k % HALF, mask=m_k, other=0.0).to(tl.float32)
    return (b_x * tl.cos(b_f) + b_xr * tl.sin(b_f)) * rope_scaling


@triton.jit
def _rms_inv(p_x, o_d, m_d, eps, D: tl.constexpr):
    """1 / RMS of a [D] head vector, in float32."""
    b_x = tl.load(p_x + o_d, mask=m_d, other=0.0).to(tl.float32)
    return 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=0) / D + eps)


@triton.jit
def rnn_step_fwd_kernel(proj, pos, state, y, y_heads, q_norm, k_norm, inv_freq, out_weight, skip, taps,
                        scale, rope_scaling, norm_eps, out_eps, s_pb, s_yb,
                        H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr,
                        NT: tl.constexpr, BNT: tl.constexpr, QK_NORM: tl.constexpr, HEAD_MAP: tl.constexpr):
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_g = i_b.to(tl.int64), i_h // G
    N: tl.constexpr = H // G  # groups in the stack
    # the projected row: every head's q, then every group's k, every group's v, every head's gate
    p_q = proj + i_b64 * s_pb + i_h * D
    p_k = proj + i_b64 * s_pb + H * D + i_g * D
    p_v = proj + i_b64 * s_pb + H * D + N * D + i_g * D
    b_gate = tl.load(proj + i_b64 * s_pb + H * D + 2 * N * D + i_h).to(tl.float32)
    b_pos = tl.load(pos + i_b64)
    real = b_pos >= 0
    b_p = tl.maximum(b_pos, 0).to(tl.float32)  # a pad's q is rotated at position 0, as the twin's
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    b_v = tl.load(p_v + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_rq, b_rk = 1.0, 1.0
    if QK_NORM:
        b_rq = _rms_inv(p_q, o_d, m_d, norm_eps, D)
        b_rk = _rms_inv(p_k, o_d, m_d, norm_eps, D)
    # decay a = exp(-softplus(gate)) (torch's softplus: linear above 20); a pad neither decays nor adds
    b_sp = tl.where(b_gate > 20.0, b_gate, tl.maximum(b_gate, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(b_gate))))
    b_a = tl.where(real, tl.exp(-b_sp), 1.0)
    b_kon = tl.where(real, 1.0, 0.0)
    p_s = state + i_bh.to(tl.int64) * ((D + NT) * D)
    b_o = tl.zeros([BD], dtype=tl.float32)
    for k0 in range(0, D, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < D
        b_q = _normed_roped(p_q, q_norm + i_g * D, o_k, m_k, b_rq, b_p, inv_freq, rope_scaling, D, QK_NORM) * scale
        b_k = _normed_roped(p_k, k_norm + i_g * D, o_k, m_k, b_rk, b_p, inv_freq, rope_scaling, D, QK_NORM) * b_kon
        p_blk = p_s + o_k[:, None] * D + o_d[None, :]
        m_blk = m_k[:, None] & m_d[None, :]
        b_s = tl.load(p_blk, mask=m_blk, other=0.0) * b_a + b_k[:, None] * b_v[None, :]  # [BK, BD]
        tl.debug_barrier()  # every copy of the tile is loaded before any is stored (module docstring)
        tl.store(p_blk, b_s, mask=m_blk)
        b_o += tl.sum(b_q[:, None] * b_s, axis=0)
    b_y = b_o / tl.sqrt(tl.sum(b_o * b_o, axis=0) / D + out_eps)
    b_y = b_y * tl.load(out_weight + i_h * D + o_d, mask=m_d, other=0.0).to(tl.float32) \
        + tl.load(skip + i_h).to(tl.float32) * b_v
    if NT > 0:
        # past values: rows D .. D + NT - 1 of the state, oldest first; taps[h, j - 1] weighs the value j
        # tokens back. A real token shifts them up by one and appends v; a pad leaves them. All rows
        # are read (as one [BNT, BD] tile, and again one row later for the shift) before any is written.
        o_t = tl.arange(0, BNT)
        m_t = (o_t < NT)[:, None] & m_d[None, :]
        p_rows = p_s + (D + o_t[:, None]) * D + o_d[None, :]
        b_past = tl.load(p_rows, mask=m_t, other=0.0)
        b_later = tl.load(p_rows + D, mask=((o_t + 1) < NT)[:, None] & m_d[None, :], other=0.0)
        b_later = tl.where((o_t == NT - 1)[:, None], b_v[None, :], b_later)
        b_taps = tl.load(taps + (i_h * NT + NT - 1 - o_t[:, None]) * D + o_d[None, :], mask=m_t, other=0.0)
        b_y += tl.sum(b_taps.to(tl.float32) * b_past, axis=0)
        tl.debug_barrier()
        tl.store(p_rows, tl.where(real, b_later, b_past), mask=m_t)
    i_y = i_h  # the head's place in y's rows: its own, or with HEAD_MAP its place in the layer's o_proj input
    if HEAD_MAP:
        i_y = tl.load(y_heads + i_h).to(tl.int32)
    tl.store(y + i_b64 * s_yb + i_y * D + o_d, b_y.to(y.dtype.element_ty), mask=m_d)


def stacked_step_triton(rnn, proj: torch.Tensor, positions: torch.Tensor, state: torch.Tensor | None,
                        out: torch.Tensor | None = None,
                        out_heads: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A StackedRNN's decode step after its projection. proj [B, W]: F.linear(x, proj_weight, proj_bias)
    of the step's x; positions [B] (-1: a pad); state [B, H, D + taps - 1, D] float32 or None (zeros).

    Returns (y [B, 1, H * D] in proj's dtype, state). The state is advanced in place and returned (a
    contiguous float32 state is the one passed; None or any other gets a fresh one), so under a CUDA
    graph it stays one static buffer. With out, a contiguous [B, H_layer, 1, D] (the layer's o_proj input),
    and out_heads [H] (where each of the stack's heads goes in it), head h is stored at out[:, out_heads[h]]
    and out is returned in y's place."""
    B, W = proj.shape
    cfg, H = rnn.cfg, rnn.skip.shape[0]
    D, NT = cfg.head_dim, cfg.taps - 1
    assert W == sum(rnn.widths) and proj.stride(1) == 1, f"projected row [{B}, {W}] does not fit {rnn.widths}"
    if state is None:
        state = rnn.init_state(B, proj.device)
    elif state.dtype != torch.float32 or not state.is_contiguous():
        state = state.to(torch.float32).contiguous()
    assert state.shape == (B, H, D + NT, D), f"state shape {tuple(state.shape)} != {(B, H, D + NT, D)}"
    if out is None:
        y = torch.empty(B, 1, H * D, dtype=proj.dtype, device=proj.device)
    else:
        assert out.is_contiguous() and out.shape[0] == B and out.shape[2:] == (1, D), \
            f"o_proj input {tuple(out.shape)} does not take [{B}, heads, 1, {D}] rows"
        assert out_heads is not None and out_heads.numel() == H, "out needs each head's place in it"
        y = out
    norms = rnn.q_norm is not None
    dummy = rnn.inv_freq  # stands in for the missing optional tensors (never read)
    warmup.first_time(("rnn_step", proj.device, proj.dtype, H, cfg.heads, D, NT, norms))
    with launch_device(proj):
        rnn_step_fwd_kernel[(B * H,)](
            proj, positions, state, y, dummy if out is None else out_heads,
            rnn.q_norm if norms else dummy, rnn.k_norm if norms else dummy,
            rnn.inv_freq, rnn.out_weight, rnn.skip, rnn.taps if NT else dummy,
            cfg.scale, cfg.rope_scaling, cfg.norm_eps, cfg.out_eps, proj.stride(0), y.stride(0),
            H=H, G=cfg.heads, D=D, BD=triton.next_power_of_2(D), BK=min(BLOCK_K, triton.next_power_of_2(D)),
            NT=NT, BNT=triton.next_power_of_2(max(NT, 1)), QK_NORM=norms, HEAD_MAP=out is not None,
            num_warps=NUM_WARPS)
    return y, state
