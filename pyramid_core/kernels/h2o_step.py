"""H2O's decode step for one layer, with scores kept per cache slot (policies/h2o.py, FUSED_STEP).

    attention[b, t] = mean_h softmax_t(q[b, h] . k[b, g(h), t] * scale)   over the visible slots
    scores[b, t]    = (0 if positions[b, t] != last_positions[b, t] else scores[b, t]) + attention[b, t]
    evict[b, t]     = inf where the slot is empty or in the recent window (positions > query_pos[b] -
                      recent[b]), else scores[b, t]

A slot whose position changed since the last step holds a new token: the cache wrote this step's token
into the slot it freed at the last step (cache.py, Evict), or appended it. Its score restarts from the
token's own attention, which is what the position-indexed scores gave a position never held before.
The comparison runs on the device, so nothing waits for the host. `evict` is an Evict's scores (inf is
policies/base.ALWAYS); the cache's argmin then picks the slot, with its tie rule.

`h2o_step` runs the Triton kernels on CUDA (h2o_step_triton.py) and `h2o_step_torch`, their twin,
elsewhere. The twin computes the attention exactly as the position-indexed path does
(scores.recent_attention_scores_torch), so on a CPU both paths keep the same tokens bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..optional import importable
from .decode import kernel_supports as decode_kernel_supports
from .scores import recent_attention_scores_torch

log = logging.getLogger(__name__)
_HEAD_DIMS = (16, 32, 64, 128, 256)  # what the kernels' tl.arange over D takes
_told: set = set()


def h2o_step_torch(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
                   scores: torch.Tensor, last_positions: torch.Tensor, recent: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """Plain PyTorch twin. queries [B, H, 1, D] (RoPE applied), query_pos [B, 1], keys [B, H_kv, T, D],
    positions [B, T] (-1 = empty slot); scores [B, T] float32 and last_positions [B, T] long are the
    layer's slot state, updated in place; recent [B, 1]: each row's recent window, so that query_pos - recent
    is its newest position outside it (the kernel takes the difference itself: one launch less a layer).
    Returns the Evict's scores [B, T] float32."""
    voters = torch.ones(queries.shape[0], 1, device=queries.device)
    attention = recent_attention_scores_torch(queries, query_pos, keys, positions, voters, scale)
    scores.copy_(torch.where(positions != last_positions, 0.0, scores) + attention)
    last_positions.copy_(positions)
    return scores.masked_fill((positions > query_pos - recent) | (positions < 0), float("inf"))


def h2o_step(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor,
             scores: torch.Tensor, last_positions: torch.Tensor, recent: torch.Tensor,
             scale: float) -> torch.Tensor:
    """As h2o_step_torch; the Triton kernels on CUDA where they fit (kernel_fits), the twin elsewhere."""
    if kernel_fits(queries, keys):
        from .h2o_step_triton import h2o_step_triton

        return h2o_step_triton(queries, query_pos, keys, positions, scores, last_positions, recent, scale)
    return h2o_step_torch(queries, query_pos, keys, positions, scores, last_positions, recent, scale)


def h2o_attend_step(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    positions: torch.Tensor, scores: torch.Tensor, last_positions: torch.Tensor, recent: torch.Tensor,
                    scale: float) -> tuple[torch.Tensor, Callable[[], torch.Tensor]] | None:
    """(attention output [B, H, 1, D], a call that gives the Evict's scores) of a steady step in one pass over
    the slots, or None where the kernels do not take the layer (then attention and h2o_step run apart, as they
    do everywhere off CUDA). The call launches the scoring kernel wherever the caller wants it to run (a side
    stream: evict_graphs.attend_and_pick). The decode kernel hands back its logits and its splits' softmax
    statistics on the way (decode_triton.decode_attention_and_logits), and h2o_step's second kernel scores the
    slots from them: the first kernel's second read of the keys goes (~4.4 us a layer on the 7B shape at batch 1,
    benchmarks/step_graph_time_7b_1k_pick.json). For a decode query (a position >= 0) the decode kernel
    hides the slots h2o_step's first kernel hides: empty ones and any after the query."""
    if not (kernel_fits(queries, keys) and decode_kernel_supports(queries, keys) and values.dtype == keys.dtype):
        return None
    from .decode_triton import decode_attention_and_logits
    from .h2o_step_triton import h2o_step_from_logits

    out, logits, m_part, s_part = decode_attention_and_logits(queries, keys, values, query_pos, positions, scale)
    return out, lambda: h2o_step_from_logits(logits, m_part, s_part, positions, scores, last_positions, query_pos,
                                             recent)


def kernel_fits(queries: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether the kernels take this layer: CUDA, Triton, one query per row, a power-of-two head_dim in
    [16, 256], queries and keys of one dtype. A CUDA layer they do not take is logged once."""
    if not queries.is_cuda or not _triton():
        return False
    D = queries.shape[-1]
    if queries.shape[2] == 1 and D in _HEAD_DIMS and queries.dtype == keys.dtype:
        return True
    why = (queries.shape[2], D, queries.dtype, keys.dtype)
    if why not in _told:
        _told.add(why)
        log.warning("H2O's decode-step kernel does not take %s queries of head_dim %d (%s over %s keys): "
                    "the PyTorch twin runs", queries.shape[2], D, queries.dtype, keys.dtype)
    return False


def step_backend(device: torch.device) -> str:
    """Which implementation runs H2O's slot-indexed decode step on this device (benchmark metadata)."""
    return "triton" if device.type == "cuda" and _triton() else "torch"


def _triton() -> bool:
    return importable("triton", "H2O's decode step uses the PyTorch twin on the GPU")
