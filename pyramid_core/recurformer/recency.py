"""Recency scores per query head, and the choice of KV groups to replace (docs/recurformer.md).

For query i of head h (A = softmax attention, causal):

    recent_h(i) = sum_{j = i - window .. i} A[h, i, j]        the query itself and the `window` keys before it
    sink_h(i)   = sum_{j < sink_len} A[h, i, j]

averaged over the calibration queries i >= sink_len + window. Earlier queries are skipped: their
window reaches into the sink tokens (the two masses would overlap) and, for i <= window, it holds the
whole context, so their recency mass is 1 whatever the head does. This is themoonlight's "Recency Ratio"
(RecurFormer, arXiv 2410.12850, section 3; the paper itself could not be read) with the sink separated
as DuoAttention does.

The group rule: a KV group's cache disappears only when all its query heads are replaced, so a
group scores the minimum over its heads (RazorAttention keeps a KV head when any query head
retrieves: the same rule). By default a head's score is recent + sink ("streaming heads are sink +
recent", DuoAttention); `include_sink=False` ranks on the window mass alone.

Attention is computed per layer from captured inputs, a chunk of queries at a time: never an L x L
matrix for the whole model. Sliding-window layers are scored as full attention (the calibration
length is below any window these families use).
"""

from __future__ import annotations

import logging

import torch

from ..kernels.scores import attention_probs
from ..layers import attention_scale, model_parts, project, rope_tables
from ..trace import RecencyReport
from .capture import calibration_ids, capture

log = logging.getLogger(__name__)

QUERY_CHUNK = 256  # queries per softmax block: [H, 256, T] floats per step


def window_masses(probs: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, window: int,
                  sink_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(recent, sink) masses [B, H, W] from attention probabilities probs [B, H, W, T].

    q_pos [B, W] are the queries' positions, k_pos [B, T] the keys' (-1 = empty slot, never counted).
    recent counts keys with q - window <= k <= q; sink counts keys with 0 <= k < sink_len.
    """
    k, q = k_pos[:, None, :], q_pos[:, :, None]                   # [B, 1, T], [B, W, 1]
    recent = (k >= 0) & (k <= q) & (k >= q - window)              # [B, W, T]
    sink = (k >= 0) & (k < sink_len)
    return (probs * recent[:, None]).sum(-1), (probs * sink[:, None]).sum(-1)


def layer_masses(lm, idx: int, x: torch.Tensor, window: int, sink_len: int,
                 query_chunk: int = QUERY_CHUNK) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed (recent [H], sink [H]) masses and the number of voting queries, for one layer.

    x [1, T, C] is the layer's input_layernorm output.
    """
    parts = model_parts(lm)
    T = x.shape[1]
    pos = torch.arange(T, device=x.device)[None]
    q, k, _ = project(parts, idx, x, rope_tables(parts.rotary, x, pos))  # the engine's projections and RoPE
    scale = attention_scale(parts, idx)
    recent = torch.zeros(q.shape[1], dtype=torch.float64, device=x.device)
    sink = torch.zeros_like(recent)
    first = sink_len + window
    for start in range(first, T, query_chunk):
        end = min(start + query_chunk, T)
        probs = attention_probs(q[:, :, start:end], pos[:, start:end], k[:, :, :end], pos[:, :end], scale)
        r, s = window_masses(probs, pos[:, start:end], pos[:, :end], window, sink_len)
        recent += r.sum((0, 2)).double()
        sink += s.sum((0, 2)).double()
    return recent, sink, max(T - first, 0)


def recency_scores(lm, texts_or_ids, window: int = 32, sink_len: int = 4, max_tokens: int = 1024,
                   max_sequences: int | None = 8) -> RecencyReport:
    """Per-head recency scores [L][H] and sink masses over calibration text (see the module docstring).

    texts_or_ids: anything calibration_ids takes (a text, texts, token ids). Each sequence is at most
    max_tokens long and must be longer than sink_len + window to vote.
    """
    if window < 0 or sink_len < 0:
        raise ValueError(f"window and sink_len must be >= 0, got {window} and {sink_len}")
    cfg = lm.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    seqs = calibration_ids(lm, texts_or_ids, max_tokens, max_sequences, min_tokens=sink_len + window + 1)
    recent = torch.zeros(L, H, dtype=torch.float64)
    sink = torch.zeros_like(recent)
    votes = 0
    for ids in seqs:
        inputs, _ = capture(lm, ids)
        with torch.no_grad():
            for idx in range(L):
                r, s, n = layer_masses(lm, idx, inputs.pop(idx), window, sink_len)
                recent[idx] += r.cpu()
                sink[idx] += s.cpu()
        votes += n
    log.info("recency: %d sequences, %d voting queries per head", len(seqs), votes)
    return RecencyReport(window=window, sink_len=sink_len, scores=(recent / votes).tolist(),
                         sink_mass=(sink / votes).tolist(),
                         heads_per_group=H // cfg.num_key_value_heads)


def head_scores(report: RecencyReport, include_sink: bool = True) -> list[list[float]]:
    """[L][H]: the window mass, plus the sink mass unless include_sink is False."""
    if not include_sink:
        return [list(row) for row in report.scores]
    return [[r + s for r, s in zip(rows, sinks)] for rows, sinks in zip(report.scores, report.sink_mass)]


def group_scores(report: RecencyReport, include_sink: bool = True) -> list[list[float]]:
    """[L][G]: each KV group's score is the minimum over its query heads."""
    G = report.heads_per_group
    return [[min(row[g * G:(g + 1) * G]) for g in range(len(row) // G)]
            for row in head_scores(report, include_sink)]


def choose_groups(report: RecencyReport, fraction: float | None = None,
                  groups: list[list[int]] | None = None, include_sink: bool = True) -> list[list[int]]:
    """[layer, group] pairs to replace, sorted by (layer, group).

    Exactly one of: fraction, the share of all KV groups to replace (round(fraction * total) of them,
    highest group score first; equal scores go to the lower layer, then the lower group), or groups,
    an explicit list checked against the report's layer and group ranges.
    """
    scores = group_scores(report, include_sink)
    L, G = len(scores), len(scores[0]) if scores else 0
    if (fraction is None) == (groups is None):
        raise ValueError("give exactly one of fraction and groups")
    if groups is not None:
        pairs = sorted({(int(l), int(g)) for l, g in groups})
        bad = [p for p in pairs if not (0 <= p[0] < L and 0 <= p[1] < G)]
        if bad:
            raise ValueError(f"groups {bad} are outside {L} layers x {G} KV groups")
        return [list(p) for p in pairs]
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    ranked = sorted(((l, g) for l in range(L) for g in range(G)), key=lambda p: (-scores[p[0]][p[1]], p))
    return [list(p) for p in sorted(ranked[:round(fraction * L * G)])]
