"""Triton kernels for H2O's slot-indexed decode step (CUDA only; imported lazily by h2o_step.py).

Two launches per layer and step, where the position-indexed path took about ten (two scoring kernels,
the scatter into a per-position buffer, the gather back, the recent-window mask and small ops):
1. `h2o_logits_fwd_kernel`, grid (chunks of CHUNK slots, rows, KV heads): for the query heads of its KV
   head, the scaled logits of the chunk's slots (-inf where a slot is not visible), written to a
   [B, H, T] float32 buffer, and the chunk's max and sum of exp (split like flash-decoding).
2. `h2o_step_fwd_kernel`, grid (blocks of BT slots, rows): combines each head's chunks into its
   log-sum-exp, turns the block's stored logits into probabilities and sums them over all heads (a
   [heads, BT] tile, no loop over KV heads for up to 32 heads), then updates the block's slot scores in
   place (restarting a slot whose position changed), records the positions, and writes the Evict's
   scores (inf for empty and recent slots). Each slot is read and written by exactly one program, its
   loads before a barrier and its stores after it (a program may hold a slot in several threads:
   recurformer/step_triton.py tells how that went wrong).

Why this shape (untimed until the next GPU run: `bash benchmarks/gpu_run.sh fused_tests
h2o_step`; the switch, h2o.FUSED_STEP, stays off until then). The first version's second kernel had grid
(cdiv(T, 64), B) and looped over all KV heads in each program, recomputing every head's logits with a
16-row dot: at batch 1 the engine's layer holds ~205 slots (20% of a 1k prompt) or ~1639 (8k), so 4 or 26
programs ran 32 iterations each on the 7B shape, ~180 us a layer whatever the slot count
(benchmarks/h2o_step_kernel.json) and ~6 ms a step over 32 layers: the mode decoded slower with it. Now
the keys are read once, by a grid spread over KV heads (205 slots: 4 x 32 = 128 programs, about one per
SM of an H200; 1639: 26 x 32 = 832); the second kernel reads only the logits (4 bytes per head and slot,
against 2 x head_dim bytes of keys) and sums the heads without atomics, in a fixed order, so the slot it
lets the cache evict is the twin's. Storing the logits rather than the probabilities keeps the two
passes' formula exp(logit - lse) of the first version; a per-KV-head probability buffer would need the
log-sum-exp before the logits, i.e. a third launch or a second read of the keys.

Keys and positions are read through their strides: the cache hands over views of larger buffers, and
a copy of the keys per step would cost more than the kernels.
"""

from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode_triton import launch_device

# float32 keys are multiplied in float32, as the twin does (Triton's default rounds them to TF32, 1e-4
# off); bfloat16 and float16 keys ignore it
DOT_PRECISION = tl.constexpr("ieee")
BT = 64        # slots per block: a [64, head_dim] key tile per step of the first kernel, [heads, 64] logits
MAX_CHUNKS = 64  # chunks per row at most: every program of the second kernel reads [heads, 64] statistics
BH = 32        # query heads per tile of the second kernel (Llama-2-7B's 32 heads in one tile)


def chunk_size(T: int) -> int:
    """Slots per program of the first kernel: one block (64) up to 4096 slots, so that a short batch-1
    layer still spreads over the GPU (205 slots: 4 chunks per KV head), then doubling so that a row has at
    most MAX_CHUNKS chunks, which bounds the statistics every program of the second kernel reads (8192
    slots: 64 chunks of 128; a full 8k layer's step sees 8193: 33 of 256). A power of two: each value
    compiles once."""
    return max(BT, triton.next_power_of_2(triton.cdiv(T, MAX_CHUNKS)))


@triton.jit
def _logits(b_q, b_k, scale, USE_DOT: tl.constexpr):
    """[BG, BT] scaled logits of the group's queries b_q [BG, D] over the keys b_k [BT, D]."""
    if USE_DOT:
        b_logit = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION).to(tl.float32)
    else:
        # one query head (BG = 1): tl.dot needs 16 rows, 15 of them wasted, and with float32 keys in "ieee"
        # precision it runs on the FMA units anyway; a product and a sum over head_dim is the
        # matrix-vector product itself, and the step is bound by reading the keys either way
        b_logit = tl.sum(b_k.to(tl.float32) * b_q.to(tl.float32), axis=1)[None, :]
    return b_logit * scale


# T, NS and the strides change with the layer's length and capacity: specialising on them would recompile
@triton.jit(do_not_specialize=["T", "NS", "s_kb", "s_kh", "s_kt", "s_pb"])
def h2o_logits_fwd_kernel(q, q_pos, k, k_pos, logits, m_out, s_out, scale, T, NS, s_kb, s_kh, s_kt, s_pb,
                          H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BG: tl.constexpr,
                          BT: tl.constexpr, CHUNK: tl.constexpr, USE_DOT: tl.constexpr):
    i_s, i_b, i_kv = tl.program_id(0), tl.program_id(1), tl.program_id(2)
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
        b_logit = tl.where(m_vis[None, :], _logits(b_q, b_k, scale, USE_DOT), float("-inf"))  # [BG, BT]
        p_l = logits + (i_b64 * H + o_h[:, None]) * T + o_t[None, :]
        tl.store(p_l, b_logit, mask=m_g[:, None] & m_t[None, :])
        b_new = tl.maximum(b_m, tl.max(b_logit, axis=1))
        b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
        b_s = b_s * tl.exp(b_m - b_safe) + tl.sum(tl.exp(b_logit - b_safe[:, None]), axis=1)
        b_m = b_new
    p_out = (i_b64 * H + o_h) * NS + i_s
    tl.store(m_out + p_out, b_m, mask=m_g)
    tl.store(s_out + p_out, b_s, mask=m_g)


@triton.jit
def _lse(m_in, s_in, i_b64, o_h, m_h, NS, H: tl.constexpr, BNS: tl.constexpr):
    """[BH] log-sum-exp of heads o_h from their chunks' max and sum; inf for a head that sees nothing
    (its probabilities are then exp(-inf - inf) = 0), and for a head past H."""
    o_s = tl.arange(0, BNS)
    p_part = (i_b64 * H + o_h[:, None]) * NS + o_s[None, :]
    m_hs = m_h[:, None] & (o_s < NS)[None, :]
    b_pm = tl.load(m_in + p_part, mask=m_hs, other=float("-inf"))
    b_ps = tl.load(s_in + p_part, mask=m_hs, other=0.0)
    b_max = tl.max(b_pm, axis=1)
    b_safe = tl.where(b_max == float("-inf"), 0.0, b_max)
    b_sum = tl.sum(b_ps * tl.exp(b_pm - b_safe[:, None]), axis=1)
    return tl.where(b_sum > 0, b_safe + tl.log(tl.where(b_sum > 0, b_sum, 1.0)), float("inf"))


@triton.jit(do_not_specialize=["T", "NS", "s_pb", "s_sb", "s_lb"])
def h2o_step_fwd_kernel(logits, m_in, s_in, k_pos, scores, last_pos, q_pos, recent, out, T, NS, s_pb, s_sb, s_lb,
                        H: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, BNS: tl.constexpr):
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    i_b64 = i_b.to(tl.int64)
    o_t = i_t * BT + tl.arange(0, BT)
    m_t = o_t < T
    b_acc = tl.zeros([BT], tl.float32)
    for h0 in range(0, H, BH):  # one pass up to 32 heads; the order of the sums is fixed (no atomics)
        o_h = h0 + tl.arange(0, BH)
        m_h = o_h < H
        b_lse = _lse(m_in, s_in, i_b64, o_h, m_h, NS, H, BNS)
        # invisible slots hold -inf (first kernel) and so add 0
        p_l = logits + (i_b64 * H + o_h[:, None]) * T + o_t[None, :]
        b_l = tl.load(p_l, mask=m_h[:, None] & m_t[None, :], other=float("-inf"))
        b_acc += tl.sum(tl.exp(b_l - b_lse[:, None]), axis=0)
    # the slot state: a slot whose position changed holds a new token and restarts from its attention
    b_kpos = tl.load(k_pos + i_b64 * s_pb + o_t, mask=m_t, other=-1)
    p_score = scores + i_b64 * s_sb + o_t
    p_last = last_pos + i_b64 * s_lb + o_t
    b_last = tl.load(p_last, mask=m_t, other=-1)
    b_old = tl.load(p_score, mask=m_t, other=0.0)
    b_new = tl.where(b_kpos != b_last, 0.0, b_old) + b_acc / H
    # several threads may hold a slot's copy (a [BT] vector is smaller than the program): all load first
    tl.debug_barrier()
    tl.store(p_score, b_new, mask=m_t)
    tl.store(p_last, b_kpos, mask=m_t)
    b_cut = tl.load(q_pos + i_b64) - tl.load(recent + i_b64)  # newest position outside the recent window
    b_evict = tl.where((b_kpos > b_cut) | (b_kpos < 0), float("inf"), b_new)
    tl.store(out + i_b64 * T + o_t, b_evict, mask=m_t)


def h2o_step_from_logits(logits: torch.Tensor, m_part: torch.Tensor, s_part: torch.Tensor, positions: torch.Tensor,
                         scores: torch.Tensor, last_positions: torch.Tensor, query_pos: torch.Tensor,
                         recent: torch.Tensor) -> torch.Tensor:
    """The second kernel alone, over what the decode kernel saw on its pass (decode_triton.
    decode_attention_and_logits): logits [B * H, T] and its splits' max and sum of exp [B * H, NS] take the
    place of the first kernel's, in the same layout. positions, scores, last_positions [B, T] and the Evict's
    scores returned as h2o_step_triton takes and gives them; query_pos and recent [B, 1]."""
    B, T = positions.shape
    H, NS = logits.shape[0] // B, m_part.shape[1]
    assert scores.stride(1) == 1 and last_positions.stride(1) == 1, "h2o_step: slot state must be row-major"
    if positions.stride(1) != 1:
        positions = positions.contiguous()
    out = torch.empty(B, T, dtype=torch.float32, device=logits.device)
    warmup.first_time(("h2o_step_from_logits", logits.device, H, max(2, triton.next_power_of_2(NS))))
    with launch_device(logits):
        launch_step(logits, m_part, s_part, positions, scores, last_positions, query_pos.reshape(B).contiguous(),
                    recent.reshape(B).contiguous(), out, H)
    return out


def launch_step(logits, m_part, s_part, positions, scores, last_positions, q_pos, recent, out, H: int) -> None:
    """The second kernel over logits [B * H, T] and their chunks' statistics [B * H, NS]; q_pos, recent [B]."""
    B, T = positions.shape
    NS = m_part.numel() // (B * H)
    h2o_step_fwd_kernel[launch_grids(B, 1, T)["step"]](
        logits, m_part, s_part, positions, scores, last_positions, q_pos, recent, out, T, NS,
        positions.stride(0), scores.stride(0), last_positions.stride(0),
        H=H, BH=min(BH, triton.next_power_of_2(H)), BT=BT, BNS=max(2, triton.next_power_of_2(NS)),
        num_warps=4)  # [32, 64] tiles


def launch_grids(B: int, H_kv: int, T: int) -> dict:
    """The two kernels' grids for a layer (benchmarks/h2o_step_kernel.py records them)."""
    return {"logits": (triton.cdiv(T, chunk_size(T)), B, H_kv), "step": (triton.cdiv(T, BT), B)}


def h2o_step_triton(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                    scores: torch.Tensor, last_positions: torch.Tensor, recent: torch.Tensor,
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
    return step_launches(q, query_pos.reshape(B).contiguous(), keys, positions, scores, last_positions,
                         recent.reshape(B).contiguous(), scale)()


def step_launches(q: torch.Tensor, q_pos: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                  scores: torch.Tensor, last_positions: torch.Tensor, recent: torch.Tensor,
                  scale: float) -> Callable[[], torch.Tensor]:
    """The two kernels' launches over the buffers made here, as a call returning the Evict's scores (so
    benchmarks/h2o_host_cost.py can time the launches alone): q [B, H, D], q_pos and recent [B], the rest as
    h2o_step_triton takes them once checked."""
    B, H, D = q.shape
    H_kv, T = keys.shape[1], keys.shape[2]
    G = H // H_kv
    grids = launch_grids(B, H_kv, T)
    CHUNK, NS = chunk_size(T), grids["logits"][0]
    BG = 1 if G == 1 else max(16, triton.next_power_of_2(G))  # tl.dot's 16 rows, unless one head
    BNS = max(2, triton.next_power_of_2(NS))
    logits = torch.empty(B, H, T, dtype=torch.float32, device=q.device)
    m_part = torch.empty(B, H, NS, dtype=torch.float32, device=q.device)
    s_part = torch.empty_like(m_part)
    out = torch.empty(B, T, dtype=torch.float32, device=q.device)

    def launch() -> torch.Tensor:
        warmup.first_time(("h2o_step", q.device, q.dtype, H, G, D, CHUNK, BNS))
        with launch_device(q):
            # a [64, D] key tile per step, 32 elements a thread at 8 warps for D = 128 (compiled for sm_90 on
            # a CPU, cuobjdump: 48 registers, against 156 at 4 warps), 4 warps below
            h2o_logits_fwd_kernel[grids["logits"]](
                q, q_pos, keys, positions, logits, m_part, s_part, scale, T, NS,
                keys.stride(0), keys.stride(1), keys.stride(2), positions.stride(0),
                H=H, G=G, D=D, BG=BG, BT=BT, CHUNK=CHUNK, USE_DOT=G > 1, num_warps=4 if D <= 64 else 8)
            launch_step(logits, m_part, s_part, positions, scores, last_positions, q_pos, recent, out, H)
        return out

    return launch
