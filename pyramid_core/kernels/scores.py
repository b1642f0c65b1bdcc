"""Recent-window attention scores: how much the most recent queries attend to each held token.

    scores[b, t] = sum_w weights[b, w] * mean_h softmax_t(q[b, h, w] . k[b, g(h), t] * scale)

over the keys a query may see (valid, and not after the query in original position). This is
PyramidInfer's selection score (Yang et al. 2024, section 4.2; the official code's head-averaged,
distance-weighted mean of the recent rows) and it never builds an L x L matrix: only W recent queries
against T keys.

`recent_attention_scores` dispatches to the Triton kernel on CUDA and to `recent_attention_scores_torch`
(its plain PyTorch twin, the reference the tests compare against) elsewhere.
"""

from __future__ import annotations

import torch

from ..optional import importable

_HEAD_CHUNK = 8     # heads per step of the twin, bounding its [B, h, W, T] temporary
_QUERY_CHUNK = 256  # queries per step: H2O's prefill votes with every prompt token (W = T)


def attention_probs(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                    key_pos: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention [B, H, W, T] (float32) of W queries over T slots, masked by position.

    queries [B, H, W, D] (RoPE applied), query_pos [B, W] (-1 = no query), keys [B, H_kv, T, D],
    key_pos [B, T] (-1 = empty slot). A query sees the valid slots at or before its own position;
    a non-query row sees every slot (callers give it no weight).
    """
    visible = sees(query_pos, key_pos) | (query_pos[:, :, None] < 0)
    return torch.softmax(scaled_logits(queries, keys, scale).masked_fill(~visible[:, None], float("-inf")), dim=-1)


def sees(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """[B, W, T] bool: which slots each query sees, the valid ones at or before its position (and within
    `window` of it)."""
    visible = (key_pos[:, None, :] >= 0) & (key_pos[:, None, :] <= query_pos[:, :, None])
    if window is not None:
        visible &= key_pos[:, None, :] > query_pos[:, :, None] - window
    return visible


def scaled_logits(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """[B, H, W, T] float32: each query head's dot products with its KV group's keys, times scale."""
    group = queries.shape[1] // keys.shape[1]
    k = keys.float().repeat_interleave(group, dim=1) if group > 1 else keys.float()
    return queries.float() @ k.transpose(-1, -2) * scale


def recent_attention_scores_torch(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                                  key_pos: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain PyTorch twin: shapes as in attention_probs, weights [B, W] (0 for slots that do not vote).

    Returns float32 [B, T]; empty slots score 0. Heads and queries are taken a few at a time to bound
    memory. When the queries span several blocks (a whole prompt voting, as in H2O's prefill), on a CPU each
    block reads only the slots up to the last one any of its queries sees: the early queries see few, and
    half the work goes. One block (a decode step, a recent window) reads every slot and waits for nothing.
    """
    H, group = queries.shape[1], queries.shape[1] // keys.shape[1]
    total = torch.zeros(keys.shape[0], keys.shape[2], dtype=torch.float32, device=queries.device)
    step = max(group, _HEAD_CHUNK // group * group)  # whole KV groups per chunk
    bound = queries.shape[2] > _QUERY_CHUNK and not queries.is_cuda  # bound each block's slots (a host read)
    for w0 in range(0, queries.shape[2], _QUERY_CHUNK):
        q_pos, votes = query_pos[:, w0:w0 + _QUERY_CHUNK], weights[:, w0:w0 + _QUERY_CHUNK].float()
        end = seen_slots(key_pos, q_pos) if bound else keys.shape[2]
        for h0 in range(0, H, step):
            kv = keys[:, h0 // group:(h0 + step) // group, :end]
            probs = attention_probs(queries[:, h0:h0 + step, w0:w0 + _QUERY_CHUNK], q_pos, kv, key_pos[:, :end], scale)
            total[:, :end] += torch.einsum("bhwt,bw->bt", probs, votes)
    total /= H
    return total.masked_fill(key_pos < 0, 0.0)


def newest_logits_torch(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, key_pos: torch.Tensor,
                        scale: float, n: int, window: int | None = None,
                        written: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, H, W, n], lse [B, H, W]) float32: each query's scaled logits over the n newest slots in use,
    newest first (-inf where it does not see the slot, and past the oldest slot), and the log-sum-exp of its
    softmax over every slot it sees: exp(logits - lse) are its attention probabilities there. Shapes as in
    attention_probs; written ([1] long on the device): the slots in use, where the rest of T is a
    reservation's unwritten tail (read without a host sync). The twin of the decode kernel's newest= output
    (decode_triton.py)."""
    B, H, W, _ = queries.shape
    logits, lse = queries.new_empty(B, H, W, n, dtype=torch.float32), queries.new_empty(B, H, W, dtype=torch.float32)
    chunks = _newest_chunks(queries, query_pos, keys, key_pos, scale, n, window, written)
    for (heads, voters), chunk, chunk_lse in chunks:
        logits[:, heads, voters], lse[:, heads, voters] = chunk, chunk_lse
    return logits, lse


def newest_probs_torch(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, key_pos: torch.Tensor,
                       scale: float, n: int) -> torch.Tensor:
    """[B, W, n] float32: each query's attention probabilities over the n newest slots, newest first, averaged
    over heads (PyramidInfer's voter rows at the prefill); never the [B, H, W, n] whole. A padding query
    (position -1), which sees nothing, has a row of zeros."""
    B, H, W, _ = queries.shape
    rows = queries.new_zeros(B, W, n, dtype=torch.float32)
    for (_, voters), logits, lse in _newest_chunks(queries, query_pos, keys, key_pos, scale, n):
        rows[:, voters] += (logits - lse.masked_fill(lse == float("-inf"), 0.0)[..., None]).exp().sum(1) / H
    return rows


def _newest_chunks(queries, query_pos, keys, key_pos, scale: float, n: int, window: int | None = None,
                   written: torch.Tensor | None = None):
    """newest_logits_torch a few heads and queries at a time: ((heads, queries) slices, logits, lse)."""
    T, group = keys.shape[2], queries.shape[1] // keys.shape[1]
    used = torch.full((1,), T, device=keys.device) if written is None else written.clamp(max=T)
    slot = used - 1 - torch.arange(n, device=keys.device)  # the slot of each age
    step = max(group, _HEAD_CHUNK // group * group)  # whole KV groups per chunk
    visible = sees(query_pos, key_pos, window)
    for h0 in range(0, queries.shape[1], step):
        for w0 in range(0, queries.shape[2], _QUERY_CHUNK):
            voters = slice(w0, w0 + _QUERY_CHUNK)
            logits = scaled_logits(queries[:, h0:h0 + step, voters], keys[:, h0 // group:(h0 + step) // group], scale)
            logits = logits.masked_fill(~visible[:, None, voters], float("-inf"))
            newest = logits[..., slot.clamp(min=0)].masked_fill(slot < 0, float("-inf"))
            yield (slice(h0, h0 + step), voters), newest, torch.logsumexp(logits, dim=-1)


def seen_slots(key_pos: torch.Tensor, query_pos: torch.Tensor) -> int:
    """How many leading slots hold every slot that some query of query_pos [B, W] sees: the slots after that
    are masked for all of them. A non-query (-1) sees every slot, but votes with no weight: left out."""
    seen = (key_pos >= 0) & (key_pos <= query_pos.amax(1, keepdim=True))
    columns = seen.any(0).nonzero()
    return int(columns[-1]) + 1 if len(columns) else 0


def recent_attention_scores(queries: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor,
                            key_pos: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Scores [B, T] (float32); the Triton kernel on CUDA, the PyTorch twin elsewhere."""
    if queries.is_cuda and _triton_available():
        from .scores_triton import recent_attention_scores_triton

        return recent_attention_scores_triton(queries, query_pos, keys, key_pos, weights, scale)
    return recent_attention_scores_torch(queries, query_pos, keys, key_pos, weights, scale)


def _triton_available() -> bool:
    return importable("triton", "scoring uses the PyTorch twin on the GPU")
