"""Trace records made from a request's state after each step (trace.py holds the record types)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import KVCache
from .kernels.scores import attention_probs
from .trace import LayerAttention, StepRecord

PREFILL_RECORD_QUERIES = 32  # prompt tokens whose mean attention the prefill record shows


@dataclass(frozen=True)
class PendingAttention:
    """One layer's attention as tensors, not yet read to the host: a step computes it when its record
    may need it (the last step of a run is known only once its token is sampled), and `read` turns it
    into a LayerAttention only for the records that carry it, so other steps pay no host copy."""

    layer: int
    positions: torch.Tensor  # [T] the slots' original positions, -1 for empty ones
    weights: torch.Tensor    # [H, T]
    voters: torch.Tensor     # [n] which of the last n queries are real tokens

    def read(self) -> LayerAttention:
        held = self.positions >= 0
        # slots in position order: a ring (cache.py) holds them out of order
        order = torch.argsort(self.positions)[int((~held).sum()):]  # empty slots (-1) sort first
        return LayerAttention(layer=self.layer, positions=self.positions[order].tolist(),
                              weights=self.weights[:, order].tolist(), num_queries=int(self.voters.sum()))


def attention_record(idx: int, q, q_pos, keys, k_pos, scale) -> PendingAttention:
    """The first row's per-head attention of its last few queries over the slots it holds."""
    n = min(PREFILL_RECORD_QUERIES, q.shape[2])
    probs = attention_probs(q[:1, :, -n:], q_pos[:1, -n:], keys[:1], k_pos[:1], scale)[0]  # [H, n, T]
    voters = (q_pos[0, -n:] >= 0)
    mean = (probs * voters[None, :, None]).sum(1) / voters.sum().clamp(min=1)
    return PendingAttention(idx, k_pos[0], mean, voters)


@dataclass(frozen=True)
class CacheState:
    """What a record says of the cache after a step, taken when the step's host work ends: decoding one
    step ahead (engine.py) makes the record only after the next step has changed the cache."""

    per_row: list[list[int]]  # [B][L] valid tokens each row holds in each layer
    kv_bytes: int
    peak_kv_bytes: int
    kept_positions: list[list[int]] | None  # row 0's original positions per layer, when asked


def cache_state(cache: KVCache, with_positions: bool) -> CacheState:
    held = cache.nbytes()
    return CacheState(cache.counts_per_row(), held, cache.update_peak(held),
                      cache.positions_of_row(0) if with_positions else None)


def step_record(step: int, ids: list[int], finished: list[bool], state: CacheState, elapsed: float,
                seen: int, attention: list | None, policy: dict, warmup_s: float = 0.0) -> StepRecord:
    """The record of one step: the sampled tokens, what the cache holds, and what was asked to be
    recorded (attention: PendingAttention per layer, None for a layer whose every KV group is a
    recurrence). warmup_s: the part of `elapsed` that was one-time work (trace.StepRecord)."""
    return StepRecord(
        step=step, phase="prefill" if step == 0 else "decode", token_ids=ids, finished=list(finished),
        kept_tokens=state.per_row[0], kept_tokens_per_row=state.per_row, kv_bytes=state.kv_bytes,
        peak_kv_bytes=state.peak_kv_bytes, step_time_s=elapsed, warmup_s=warmup_s, seen_tokens=seen,
        kept_positions=state.kept_positions,
        attention=None if attention is None else [a.read() for a in attention if a is not None],
        policy=policy)
