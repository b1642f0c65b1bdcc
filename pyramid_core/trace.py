"""Trace records: the only contract between the engine and everything that shows or measures it.

The engine yields one `StepRecord` per step (step 0 is the prefill). Records hold plain Python values
(ints, floats, lists), never tensors, so visual/, the app and the CLI can use them without torch and
they serialise to JSON as they are.

Per-layer lists describe the *first* sequence of the batch unless the field name says otherwise
(`kept_tokens_per_row`): that is the sequence the app and the CLI show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from . import metrics
from .record_checks import check_recency_report, check_step_record

MIB = metrics.MIB  # for views, which import nothing of pyramid_core but this module


@dataclass(frozen=True)
class Mode:
    """A KV-cache mode as users and views know it. `name` is what users type and records carry (the
    policy's `name`; policies.ALL_POLICIES maps it to the policy class); color and label are how every
    view shows it."""

    name: str
    color: str
    label: str


# The one list of modes, in pane order. policies/__init__.py checks at import that it names exactly
# the policies there are.
MODES = (
    Mode("baseline", "#4d4d4d", "baseline (full cache)"),
    Mode("pyramid", "#1f77b4", "PyramidInfer"),
    Mode("streaming", "#ff7f0e", "streaming (sinks + recent)"),
    Mode("h2o", "#d62728", "H2O (heavy hitters + recent)"),
    Mode("snapkv", "#17becf", "SnapKV (prompt voted by its end)"),
    Mode("recurformer", "#2ca02c", "RecurFormer"),
    Mode("pyramid+recurformer", "#9467bd", "PyramidInfer + RecurFormer"),
)


@dataclass(frozen=True)
class LayerAttention:
    """Attention of the current token (decode) or of the prompt's last tokens (prefill) in one layer.

    `weights[h][j]` is head h's attention weight on the j-th token the layer holds, whose original
    position is `positions[j]`. In prefill the row is the mean over the last `num_queries` prompt
    tokens. Rows sum to 1 over the held tokens (first sequence only).
    """

    layer: int
    positions: list[int]
    weights: list[list[float]]  # [H][T_l]
    num_queries: int = 1


@dataclass(frozen=True)
class StepRecord:
    """What happened in one engine step. Frozen: views keep and share records (compare.slim makes
    slimmer copies with dataclasses.replace), so nothing may change one after it is made.

    step:              0 for the prefill, then 1, 2, ... for each decode step.
    phase:             "prefill" or "decode".
    token_ids:         the token sampled at this step, one per sequence ([B]).
    finished:          per sequence, whether it has ended (EOS seen or budget spent).
    kept_tokens:       per layer, how many tokens the first sequence's cache holds ([L]).
    kept_tokens_per_row: [B][L], the same for every sequence.
    kv_bytes:          bytes of K and V (and any recurrent state) the cache holds now, all layers, all rows.
    peak_kv_bytes:     the largest kv_bytes seen so far in this request.
    step_time_s:       wall time of this step (the prefill's includes the whole prompt).
    warmup_s:          the part of step_time_s that was warm-up: the whole step when it did one-time
                       work (a CUDA graph capture, a kernel compilation; warmup.py), else 0.0.
    seen_tokens:       tokens the first sequence has seen (prompt + generated), i.e. the full length.
    kept_positions:    per layer, the original positions the first sequence's cache holds; filled at
                       the prefill always and at decode steps when the engine was asked to record them.
    attention:         per-layer attention of the first sequence, when recording was asked for.
    policy:            the policy's name and its resolved settings (e.g. a solved decay ratio).
    """

    step: int
    phase: str
    token_ids: list[int]
    finished: list[bool]
    kept_tokens: list[int]
    kept_tokens_per_row: list[list[int]]
    kv_bytes: int
    peak_kv_bytes: int
    step_time_s: float
    seen_tokens: int
    kept_positions: list[list[int]] | None = None
    attention: list[LayerAttention] | None = None
    policy: dict = field(default_factory=dict)
    warmup_s: float = 0.0

    def __post_init__(self):
        if self.attention is not None and not all(isinstance(a, LayerAttention) for a in self.attention):
            raise ValueError(f"step {self.step}: attention entries must be LayerAttention records")
        check_step_record(self)  # in shape; from_dict checks every value too (record_checks.py says why)

    def to_dict(self) -> dict:
        """Plain dict form (JSON-ready). Records are never mutated, so their lists are shared, not
        copied: a live view turns hundreds of records with per-layer attention into dicts."""
        data = {name: getattr(self, name) for name in STEP_FIELDS}  # fields() per call cost a third of this
        if self.attention is not None:
            data["attention"] = [dict(vars(a)) for a in self.attention]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "StepRecord":
        """A record from its dict form (attention entries as dicts or LayerAttention), every value checked."""
        data = dict(data)
        if data.get("attention") is not None:
            data["attention"] = [a if isinstance(a, LayerAttention) else LayerAttention(**a)
                                 for a in data["attention"]]
        record = cls(**data)
        check_step_record(record, deep=True)
        return record


STEP_FIELDS = tuple(f.name for f in fields(StepRecord))


@dataclass(frozen=True)
class RunSummary:
    """The figures of one run (a list of StepRecords), each as metrics.py defines it.

    prompt_tokens: the prefill record's seen_tokens. tokens: the first sequence's generated tokens.
    final_kv_bytes, peak_kv_bytes: the cache's bytes at the end and at most. prefill_s: the prefill's
    time. tokens_per_s: all sequences over every step's time, prefill and warm-up included (what the
    run took); decode_tokens_per_s: over the decode steps that did no one-time work (metrics.py says
    why). warmup_s: the time of the steps that did one-time work, any phase (a prefill's is also in
    prefill_s).
    kv_share_asked: the share of the full cache's tokens the KV budget asked for (None: no budget);
    kv_share_reached: the share held, averaged over the run's records (first sequence).
    """

    prompt_tokens: int
    tokens: list[int]
    final_kv_bytes: int
    peak_kv_bytes: int
    prefill_s: float
    tokens_per_s: float | None
    decode_tokens_per_s: float | None
    kv_share_asked: float | None = None
    kv_share_reached: float | None = None
    warmup_s: float = 0.0

    @classmethod
    def of(cls, run: list[StepRecord]) -> "RunSummary":
        return cls(prompt_tokens=run[0].seen_tokens, tokens=metrics.first_sequence_tokens(run),
                   final_kv_bytes=run[-1].kv_bytes, peak_kv_bytes=metrics.peak_kv_bytes(run),
                   prefill_s=run[0].step_time_s, tokens_per_s=metrics.tokens_per_s(run),
                   decode_tokens_per_s=metrics.decode_tokens_per_s(run),
                   kv_share_asked=metrics.kv_share_asked(run), kv_share_reached=metrics.kv_share_reached(run),
                   warmup_s=metrics.warmup_s(run))

    def agreement(self, reference: "RunSummary | None") -> float | None:
        return metrics.agreement(self.tokens, reference.tokens if reference else None)

    def first_divergence(self, reference: "RunSummary | None") -> int | None:
        return metrics.first_divergence(self.tokens, reference.tokens if reference else None)


@dataclass(frozen=True)
class RecencyReport:
    """Per-head recency scores (docs/recurformer.md, "Choosing groups").

    scores[l][h]:    attention mass query head h of layer l puts on the last `window + 1` keys,
                     averaged over calibration queries.
    sink_mass[l][h]: mass on the first `sink_len` tokens, measured separately.
    heads_per_group: query heads sharing one KV head (GQA group size).
    replaced:        [layer, kv_group] pairs whose heads run as a linear RNN (no KV cache).
    """

    window: int
    sink_len: int
    scores: list[list[float]]
    sink_mass: list[list[float]]
    heads_per_group: int
    replaced: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        check_recency_report(self)

    def to_dict(self) -> dict:
        return asdict(self)
