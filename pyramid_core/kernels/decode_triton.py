"""Triton kernel for decode attention: one query per row over the slots a layer holds (CUDA only;
imported lazily by engine.attention, whose SDPA path is its PyTorch twin; kernels/decode.py decides).

Why not SDPA: a single query leaves its flash kernel's 64-128-row query tile nearly empty. At Table 1's
batch (116 rows x 40 heads x ~350 slots, H200, 2026-11-27) flash moved the cache at ~2.1 TB/s and took
half of every decode step; this kernel moves it at ~3 TB/s (benchmarks/kernel_check_decode.json).
Decoding is a matrix-vector product: each program streams one (row, head)'s keys and values once with
an online softmax, and masks come from the slots' original positions, so compressed rows of different
lengths (holes) and sliding windows need no mask tensor. It needs rows x heads enough to fill the GPU:
small batches keep SDPA, whose flash kernel splits the keys among programs. Where a caller has no SDPA
to fall back on (the whole decode step as one CUDA graph, step_graphs.py, at batch 1), and at any batch
where it also writes PyramidInfer's voters' logits (in two at least: NEWEST_SPLITS), the kernel splits
the keys itself: each (row, head) runs as several programs over consecutive stretches of slots, which
write their partial softmax (running max, sum and weighted values), and a second kernel merges them, as
flash decoding does. Loads go by slot index, not by position (which they would have to wait for): over a
whole reservation (the step graph's fixed shapes) the caller passes `written`, a device count of the slots
in use, and nothing past it is read.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .. import warmup
from .decode import sm_count

# slots per step of a program's loop and warps: Table 1's largest batches (PyramidInfer's 138 rows and the
# baseline's 74, 40 layers of the 13B shape, whole-step graph) took 9.07 and 10.18 ms a step in blocks of 64
# with 2 warps, against 11.02 and 11.45 in blocks of 128 (4 or 8 warps, 256 slots: slower still;
# benchmarks/decode_batch_sweep_2026-12-02.json). A split cache of more than SHORT_T slots (batch 1) takes
# 128 a step: 1080 of 1280 slots ran fastest so (8.5 us; decode_split_sweep_2026-12-02.json), while H2O's
# 20% of a 1k prompt (206 slots, the 7B shape) took 5.4 us a call in 64s against 10.9 in 128s. Software
# pipelining of the slot loop (num_stages 2 or 3 against 1) changed no setting by more than 0.6%.
BLOCK_T = 64
LONG_SPLIT_BLOCK_T, SHORT_T = 128, 512
NUM_WARPS = 2
# a split covers at least this many blocks of slots, and splits are added until there are about this
# many programs per SM: at batch 1 the 7B shape's 32 heads alone fill a quarter of an H200's 132 SMs
MIN_BLOCKS_PER_SPLIT = 1
PROGRAMS_PER_SM = 16
# a kernel that also writes PyramidInfer's voters' logits (newest=) splits each (row, head)'s slots at least
# this many ways even where rows x heads fill the GPU: only the last split's programs hold newest slots and
# take the store's branch, and the programs are half as long where the GPU runs them in rounds (255
# registers a thread: four programs an SM, 528 on an H200, so 159 of Table 1's rows x 40 heads begin a 13th
# round of whole-length programs: 11.65 ms a step of its layers at 158 rows, 12.33 at 159). Table 1's
# PyramidInfer layers at 140-162 rows took 3-8% less split in two (160 rows: 11.45 ms against 12.39; three
# splits 11.72, four 12.43), the baseline's at 74 rows, which writes no logits, 2.5% more
# (benchmarks/decode_tail_sweep_2026-12-03_branch.json, decode_split_check_2026-12-03_branch.json).
NEWEST_SPLITS = 2


# T changes with every step: specialising on it would recompile constantly
@triton.jit(do_not_specialize=["T", "window", "chunk", "NEWEST"])
def decode_attention_kernel(q, k, v, k_pos, q_pos, out, out_heads, part_m, part_l, part_acc, logits, written,
                            newest, newest_lse, scale, window, T, chunk, NEWEST, s_qb, s_qh, s_kb, s_kh, s_kt, s_vb,
                            s_vh, s_vt, s_pb, s_ob, s_nb, s_nh, s_lb, H: tl.constexpr, G: tl.constexpr,
                            D: tl.constexpr, BT: tl.constexpr, WINDOWED: tl.constexpr, SPLIT: tl.constexpr,
                            LOGITS: tl.constexpr, HEAD_MAP: tl.constexpr, WRITTEN: tl.constexpr,
                            NEWEST_ROWS: tl.constexpr):
    """Program (row x head, split): the slots [split * chunk, (split + 1) * chunk) of T (of *written, with
    WRITTEN). SPLIT: write the partial softmax for merge_kernel; else chunk >= T and the program writes the
    output itself, at out_row(). LOGITS: also write each slot's scaled logit (-inf where not visible) into
    logits [B * H, T], and the split's max and sum of exp, from which a caller gets every slot's probability
    (H2O's scores). NEWEST_ROWS: write the scaled logits of the NEWEST newest slots, newest first, into
    newest [b, h, :NEWEST] (-inf where not visible or past the oldest slot) and the log-sum-exp of the whole
    softmax into newest_lse [b, h] (SPLIT: merge_kernel does the last two), from which PyramidInfer's voter
    rows are made in one parallel pass (kernels/head_mean.py): normalising here, in each (row, head)'s one
    program, was a serial loop over the newest slots (head_mean.py says what it cost)."""
    i_bh, i_s = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_kv = i_b.to(tl.int64), i_h // G
    p_newest = newest + i_b64 * s_nb + i_h * s_nh
    t_all = T
    if WRITTEN:
        t_all = tl.minimum(T, tl.load(written))
    o_d = tl.arange(0, D)
    b_q = tl.load(q + i_b64 * s_qb + i_h * s_qh + o_d).to(tl.float32) * scale
    b_qpos = tl.load(q_pos + i_b64)
    p_k = k + i_b64 * s_kb + i_kv * s_kh
    p_v = v + i_b64 * s_vb + i_kv * s_vh
    p_pos = k_pos + i_b64 * s_pb
    b_m = tl.full([1], float("-inf"), tl.float32)
    b_l = tl.zeros([1], tl.float32)
    b_acc = tl.zeros([D], tl.float32)
    t_start = i_s * chunk
    t_end = tl.minimum(t_start + chunk, t_all)
    for t0 in tl.range(t_start, t_end, BT):
        o_t = t0 + tl.arange(0, BT)
        b_s, b_m, b_l, b_acc = attend_block(o_t, t_end, b_q, b_qpos, p_pos, p_k, p_v, s_kt, s_vt, window, b_m,
                                            b_l, b_acc, o_d, WINDOWED)
        if LOGITS:
            tl.store(logits + i_bh.to(tl.int64) * T + o_t, b_s, mask=o_t < t_end)
        if NEWEST_ROWS:
            # behind a branch each program takes or skips as a whole (only blocks holding newest slots): as a
            # masked store in every iteration it pushed the compiled loop past its registers at head dim 128
            # under Triton 3.6 (136 bytes of spills; a step of Table 1's 40 layers at 160 rows 17.0 ms, 12.4 so,
            # 11.5 without the logits: decode_newest_sweep_2026-12-03*.json); computed again after the loop, the
            # newest slots lengthened a split's last program (7B, batch 1, 1k: 0.94x the baseline, 0.99x so).
            # tests/test_decode_kernel_codegen.py holds this form to no spills.
            if t0 + BT > t_all - NEWEST:
                tl.store(p_newest + (t_all - 1 - o_t), b_s, mask=(o_t < t_end) & (o_t >= t_all - NEWEST))
    i_part = i_bh.to(tl.int64) * tl.num_programs(1) + i_s
    if SPLIT or LOGITS:  # a split without a valid slot leaves max -inf, sum 0: merge_kernel weighs it by 0
        tl.store(part_m + i_part + tl.arange(0, 1), b_m)
        tl.store(part_l + i_part + tl.arange(0, 1), b_l)
    if SPLIT:
        tl.store(part_acc + i_part * D + o_d, b_acc)
    else:
        tl.store(out_row(out, out_heads, i_bh, s_ob, H, D, HEAD_MAP) + o_d, (b_acc / b_l).to(out.dtype.element_ty))
        if NEWEST_ROWS:
            newest_end(p_newest, newest_lse + i_b64 * s_lb + i_h, t_all, NEWEST, b_m + tl.log(b_l), BT)


@triton.jit
def attend_block(o_t, t_end, b_q, b_qpos, p_pos, p_k, p_v, s_kt, s_vt, window, b_m, b_l, b_acc, o_d,
                 WINDOWED: tl.constexpr):
    """One block of slots o_t (those < t_end) into the online softmax (max b_m, sum b_l, output b_acc): the
    block's scaled logits (-inf where not visible) and the updated three."""
    # every load goes by index: masked by the positions, the keys' and values' loads would wait for the
    # positions' load, which cost a fifth of the kernel's time at Table 1's batches
    # (decode_batch_sweep_2026-12-02.json); the positions mask the scores alone
    m_load = o_t < t_end
    b_pos = tl.load(p_pos + o_t, mask=m_load, other=-1)
    m_t = (b_pos >= 0) & (b_pos <= b_qpos)
    if WINDOWED:
        m_t = m_t & (b_pos > b_qpos - window)
    b_k = tl.load(p_k + o_t[:, None] * s_kt + o_d[None, :], mask=m_load[:, None], other=0.0)
    b_s = tl.where(m_t, tl.sum(b_k.to(tl.float32) * b_q[None, :], axis=1), float("-inf"))
    b_new = tl.maximum(b_m, tl.max(b_s, axis=0))
    b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
    b_p = tl.exp(b_s - b_safe)
    b_alpha = tl.exp(b_m - b_safe)
    b_v = tl.load(p_v + o_t[:, None] * s_vt + o_d[None, :], mask=m_load[:, None], other=0.0)
    b_v = tl.where(m_t[:, None], b_v, 0.0)  # a hole's memory may hold NaN, which weight 0 would keep
    b_acc = b_acc * b_alpha + tl.sum(b_p[:, None] * b_v.to(tl.float32), axis=0)
    b_l = b_l * b_alpha + tl.sum(b_p, axis=0)
    return b_s, b_new, b_l, b_acc


@triton.jit
def newest_end(p_newest, p_lse, t_all, NEWEST, b_lse, BT: tl.constexpr):
    """A (row, head)'s log-sum-exp b_lse [1] into p_lse, and -inf at the ages its loop never wrote (past the
    slots in use, t_all: a cache shorter than NEWEST, no iteration otherwise)."""
    tl.store(p_lse + tl.arange(0, 1), b_lse)
    for a0 in tl.range(t_all, NEWEST, BT):
        o_age = a0 + tl.arange(0, BT)
        tl.store(p_newest + o_age, tl.full([BT], float("-inf"), tl.float32), mask=o_age < NEWEST)


@triton.jit
def out_row(out, out_heads, i_bh, s_ob, H: tl.constexpr, D: tl.constexpr, HEAD_MAP: tl.constexpr):
    """Where (row, head) i_bh's output goes: head h of row b at out[b, h], or with HEAD_MAP at
    out[b, out_heads[h]] (the heads' places among a wider set: RecurFormer's o_proj input)."""
    i_b, i_h = i_bh // H, i_bh % H
    if HEAD_MAP:
        i_h = tl.load(out_heads + i_h)
    return out + i_b.to(tl.int64) * s_ob + i_h * D


@triton.jit(do_not_specialize=["T", "NEWEST"])
def merge_kernel(part_m, part_l, part_acc, out, out_heads, newest, newest_lse, written, S, T, NEWEST, s_ob, s_nb,
                 s_nh, s_lb, H: tl.constexpr, D: tl.constexpr, SP: tl.constexpr, HEAD_MAP: tl.constexpr,
                 WRITTEN: tl.constexpr, NEWEST_ROWS: tl.constexpr, BT: tl.constexpr):
    """One program per (row, head): the S partial softmaxes of its splits rescaled to their common max
    and summed. Every decode query sees at least its own slot, so that max is finite. NEWEST_ROWS: the
    log-sum-exp beside the newest slots' logits that the splits left (decode_attention_kernel)."""
    i_bh = tl.program_id(0).to(tl.int64)
    o_s, o_d = tl.arange(0, SP), tl.arange(0, D)
    b_m = tl.load(part_m + i_bh * S + o_s, mask=o_s < S, other=float("-inf"))
    b_l = tl.load(part_l + i_bh * S + o_s, mask=o_s < S, other=0.0)
    b_acc = tl.load(part_acc + (i_bh * S + o_s[:, None]) * D + o_d[None, :], mask=o_s[:, None] < S, other=0.0)
    b_max = tl.max(b_m, axis=0)
    b_w = tl.exp(b_m - b_max)
    b_sum = tl.sum(b_acc * b_w[:, None], axis=0) / tl.sum(b_l * b_w, axis=0)
    tl.store(out_row(out, out_heads, i_bh, s_ob, H, D, HEAD_MAP) + o_d, b_sum.to(out.dtype.element_ty))
    if NEWEST_ROWS:
        t_all = T
        if WRITTEN:
            t_all = tl.minimum(T, tl.load(written))
        i_b, i_h = i_bh // H, i_bh % H
        newest_end(newest + i_b * s_nb + i_h * s_nh, newest_lse + i_b * s_lb + i_h, t_all, NEWEST,
                   b_max + tl.log(tl.sum(b_l * b_w, axis=0)), BT)


def decode_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                            k_pos: torch.Tensor, scale: float, window: int | None,
                            splits: int | None = None, into: tuple | None = None,
                            written: torch.Tensor | None = None, newest: tuple | None = None) -> torch.Tensor:
    """q [B, H, 1, D]; k, v [B, H_kv, T, D] (any strides with a contiguous last dim: cache views);
    q_pos [B, 1]; k_pos [B, T], -1 for an empty slot. Returns [B, H, 1, D] in q's dtype; with into
    (full [B, H_full, 1, D], heads [H] long), head h is written into full[:, heads[h]] instead, and full returned.

    A query attends to the valid slots at or before its position (and within `window` of it). Every
    decode query has a position and sees at least its own slot (the engine appends it first); SDPA's
    path also lets an empty query row (position -1) attend anywhere, which decoding never produces.
    splits: how many programs share a (row, head)'s slots; None: as many as fill the GPU (launch_plan).
    written: [1] long on q's device, the slots in use (the rest of T is a reservation's unwritten tail,
    never read); None: all T. newest: (logits [B, H, N], lse [B, H]) float32 (last dims contiguous) that
    receive each head's scaled logits over the N newest slots in use, newest first (-inf where not seen or
    past the oldest slot), and the log-sum-exp of its softmax: exp(logits - lse) are the attention
    probabilities (kernels/scores.py newest_logits_torch is the twin)."""
    return launch(q, k, v, q_pos, k_pos, scale, window, splits, with_logits=False, into=into, written=written,
                  newest=newest)[0]


def decode_attention_and_logits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                                k_pos: torch.Tensor, scale: float, splits: int | None = None):
    """As decode_attention_triton without a window, and what the pass over the keys saw on the way, for a
    policy that scores the slots by their attention (H2O's steady step, kernels/h2o_step.py): (out
    [B, H, 1, D], logits [B * H, T] float32, scaled, -inf where not visible, and each split's max and sum
    of exp [B * H, S]). A slot's probability is exp(logit - logsumexp over its (row, head)'s splits)."""
    return launch(q, k, v, q_pos, k_pos, scale, None, splits, with_logits=True)


def launch(q, k, v, q_pos, k_pos, scale: float, window: int | None, splits: int | None, with_logits: bool,
           into: tuple | None = None, written: torch.Tensor | None = None, newest: tuple | None = None):
    """The kernel (and the merge of its splits): (out [B, H, 1, D], logits, split max, split sum), the last
    three None unless with_logits; out is into's full where given (decode_attention_triton)."""
    B, H, _, D = q.shape
    T = k.shape[2]
    assert k.stride(3) == 1 and v.stride(3) == 1 and q.stride(3) == 1, "decode attention: last dim must be contiguous"
    if newest is not None:
        rows, lse = newest
        assert rows.dtype == lse.dtype == torch.float32 and rows.shape[:2] == lse.shape == (B, H) \
            and rows.stride(2) == 1 and lse.stride(1) == 1 and not with_logits, "decode attention: newest's shapes"
    k_pos = k_pos if k_pos.stride(1) == 1 else k_pos.contiguous()
    if into is not None:
        out, heads = into
        assert out.is_contiguous() and out.shape[0] == B and out.shape[-1] == D and len(heads) == H
    else:
        out, heads = torch.empty(B, H, 1, D, dtype=q.dtype, device=q.device), None
    block, S = launch_plan(B * H, T, q.device, newest is not None)
    S = S if splits is None else splits
    chunk = triton.cdiv(triton.cdiv(T, S), block) * block
    S = triton.cdiv(T, chunk)  # no split left without slots
    stats = [torch.empty(B * H, S, dtype=torch.float32, device=q.device) for _ in range(2)] \
        if S > 1 or with_logits else [out] * 2  # unused without splits or logits
    acc = torch.empty(B * H, S, D, dtype=torch.float32, device=q.device) if S > 1 else out
    logits = torch.empty(B * H, T, dtype=torch.float32, device=q.device) if with_logits else out
    # Triton compiles per device, dtype and constexpr values: the first launch of each is warm-up. It
    # also specialises on strides divisible by 16, which this key leaves out: a recompile for a new
    # stride pattern is missed (counted as decoding), never invented.
    warmup.first_time(("decode_attention", q.device, q.dtype, H, H // k.shape[1], D, block, window is not None,
                       S > 1, with_logits, into is not None, written is not None, newest is not None))
    places = out if heads is None else heads  # unread without HEAD_MAP
    count = out if written is None else written  # unread without WRITTEN
    rows, lse, n, s_nb, s_nh, s_lb = (out, out, 0, 0, 0, 0) if newest is None else \
        (*newest, newest[0].shape[2], *newest[0].stride()[:2], newest[1].stride(0))
    with launch_device(q):
        decode_attention_kernel[(B * H, S)](
            q, k, v, k_pos, q_pos.reshape(B).contiguous(), out, places, *stats, acc, logits, count, rows, lse,
            scale, window or 0, T, chunk, n, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), k_pos.stride(0), out.stride(0), s_nb, s_nh, s_lb, H=H,
            G=H // k.shape[1], D=D, BT=block, WINDOWED=window is not None, SPLIT=S > 1, LOGITS=with_logits,
            HEAD_MAP=heads is not None, WRITTEN=written is not None, NEWEST_ROWS=newest is not None,
            num_warps=NUM_WARPS, num_stages=1)
        if S > 1:
            merge_kernel[(B * H,)](*stats, acc, out, places, rows, lse, count, S, T, n, out.stride(0), s_nb, s_nh,
                                   s_lb, H=H, D=D, SP=triton.next_power_of_2(S), HEAD_MAP=heads is not None,
                                   WRITTEN=written is not None, NEWEST_ROWS=newest is not None, BT=block)
    return (out, *((logits, *stats) if with_logits else (None, None, None)))


def launch_plan(programs: int, T: int, device: torch.device, newest: bool = False) -> tuple[int, int]:
    """(slots a program's loop takes a step, splits per (row, head)) for `programs` (row, head)s over T slots:
    on a CPU one split of BLOCK_T; on a GPU block_and_splits over its SMs."""
    if device.type != "cuda":
        return BLOCK_T, 1
    return block_and_splits(programs, T, sm_count(device), newest)


def block_and_splits(programs: int, T: int, sms: int, newest: bool = False) -> tuple[int, int]:
    """Splits so that about PROGRAMS_PER_SM programs run per SM, each over at least MIN_BLOCKS_PER_SPLIT
    blocks of slots (1 where rows x heads fill the GPU already), and with the voters' logits (newest) at
    least NEWEST_SPLITS where T spans that many blocks; blocks of BLOCK_T slots, or LONG_SPLIT_BLOCK_T where
    filling the GPU splits a cache of more than SHORT_T slots."""
    def splits(block: int) -> int:
        return max(1, min(triton.cdiv(PROGRAMS_PER_SM * sms, programs), triton.cdiv(T, MIN_BLOCKS_PER_SPLIT * block)))

    block = LONG_SPLIT_BLOCK_T if T > SHORT_T and splits(LONG_SPLIT_BLOCK_T) > 1 else BLOCK_T
    least = min(NEWEST_SPLITS, triton.cdiv(T, block)) if newest else 1
    return block, max(splits(block), least)


def launch_device(x: torch.Tensor):
    """x's GPU as the current device while a kernel launches: Triton launches on the current device, and
    under a device_map a layer's tensors sit on another GPU than cuda:0. (On a CPU, in the tests'
    interpreter, there is nothing to set.)"""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
