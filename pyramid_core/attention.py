"""Attention over the slots a layer holds, dispatched to SDPA's fused kernels, a masked SDPA or the
Triton decode kernel (kernels/decode_triton.py, whose twin is the SDPA path here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from .kernels.decode import kernel_fits as decode_kernel_fits
from .kernels.decode import kernel_supports as decode_kernel_supports
from .kernels.scores import newest_logits_torch

# SDPA without cuDNN: cuDNN builds an execution plan for every new shape (tens of ms on an H200), and
# here every decode step and every compressed layer brings a new key length. Measured 2026-11-26 on an
# H200: a first decode at a new length took ~35 ms per layer with cuDNN; flash/efficient need no plan.
# torch keeps this choice process-wide while a step runs; concurrent requests only ever set the same.
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(q, k, v, q_pos, k_pos, *, scale: float, holes: bool, window: int | None,
              causal_square: bool, decode_kernel: bool = True, any_batch: bool = False,
              into: tuple | None = None, written: torch.Tensor | None = None,
              newest: tuple | None = None) -> torch.Tensor:
    """SDPA over held slots, masked by original positions. q [B, H, Tq, D]; k, v [B, H_kv, Tk, D].

    Without holes or a sliding window the mask is implied: a square prefill block is causal (kept
    tokens stay in order) and a single decode query sees every slot; then SDPA runs its fused kernels.
    A decode step on CUDA runs the Triton decode kernel instead (kernels/decode_triton.py; this SDPA
    path is its reference) where rows x heads fill the GPU, or at any batch with any_batch (a step inside
    one CUDA graph, step_graphs.py: the kernel splits each row's slots itself, and SDPA's flash kernel
    took ~9 us a layer for H2O's ~205 slots on the 7B shape, step_graph_time_7b_1k_modes.json);
    decode_kernel=False keeps it off.

    into (full [B, H_full, Tq, D], heads [H] long): put head h's output at full[:, heads[h]] and return
    full (RecurFormer's o_proj input, whose other heads are the recurrences'); the kernel stores it there.
    written ([1] long on the device): the slots in use, for the kernel over a whole reservation, which then
    reads none past them; the SDPA path masks those by their positions (-1) and needs no count.
    newest ((logits [B, H, N], lse [B, H]) float32, decode only): also write each head's scaled logits over
    the N newest slots, newest first, and its softmax's log-sum-exp (PyramidInfer's voter rows); the kernel
    then runs at any batch, since its pass gives them for free where SDPA's path needs one more
    (kernels/scores.py newest_logits_torch).
    """
    fits = decode_kernel_supports if any_batch or newest is not None else decode_kernel_fits
    if decode_kernel and fits(q, k):
        from .kernels.decode_triton import decode_attention_triton

        return decode_attention_triton(q, k, v, q_pos, k_pos, scale, window, into=into, written=written,
                                       newest=newest)
    out = sdpa_attention(q, k, v, q_pos, k_pos, scale, holes, window, causal_square)
    if newest is not None:
        logits, lse = newest_logits_torch(q, q_pos, k, k_pos, scale, newest[0].shape[2], window, written)
        newest[0].copy_(logits[:, :, 0]), newest[1].copy_(lse[:, :, 0])
    return out if into is None else into[0].index_copy_(1, into[1], out)


def sdpa_attention(q, k, v, q_pos, k_pos, scale: float, holes: bool, window: int | None, causal_square: bool):
    """attention's SDPA path (the decode kernel's reference): [B, H, Tq, D]."""
    gqa = q.shape[1] != k.shape[1]
    if not holes and window is None and (causal_square or q.shape[2] == 1):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal_square and q.shape[2] > 1,
                                              scale=scale, enable_gqa=gqa)
    mask = (k_pos[:, None, :] >= 0) & (k_pos[:, None, :] <= q_pos[:, :, None])  # [B, Tq, Tk]
    if window is not None:
        mask &= k_pos[:, None, :] > q_pos[:, :, None] - window
    mask |= (q_pos < 0)[:, :, None]  # an empty query slot attends anywhere; nobody reads its output
    if gqa and q.is_cuda:  # fused SDPA kernels with a mask want equal head counts
        group = q.shape[1] // k.shape[1]
        k, v, gqa = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=gqa)
