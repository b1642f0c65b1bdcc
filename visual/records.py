"""Trace records in, validated dataclasses out: the one normalising step every figure goes through.

Figures accept the engine's dataclasses (`StepRecord`, `LayerAttention`, `RecencyReport`) or their dict
form (`to_dict()` / JSON). Anything that breaks the contract in pyramid_core/trace.py raises ValueError
naming the field; nothing here is caught.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import MISSING, fields

from pyramid_core.trace import LayerAttention, RecencyReport, StepRecord

PHASES = ("prefill", "decode")
SCORE_TOLERANCE = 1e-6  # recency scores are means of bf16 weights and may overshoot 1 by rounding


def as_runs(runs) -> dict[str, list[StepRecord]]:
    """{mode: records} with every record validated; modes with no records yet are left out."""
    if not isinstance(runs, dict):
        raise ValueError(f"runs must be a dict of mode -> records, got {type(runs).__name__}")
    for mode in runs:
        if not isinstance(mode, str):
            raise ValueError(f"mode names must be strings, got {mode!r}")
    return {mode: as_run(mode, records) for mode, records in runs.items() if len(records) > 0}


def as_run(mode: str, records) -> list[StepRecord]:
    """One request's records: starts at the prefill, steps increase, layer and batch counts stay fixed."""
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"run {mode!r}: records must be a list, got {type(records).__name__}")
    run = [as_record(r) for r in records]
    if run and run[0].phase != "prefill":
        raise ValueError(f"run {mode!r}: the first record must be the prefill (step 0), got step {run[0].step}")
    for prev, cur in zip(run, run[1:]):
        if cur.step <= prev.step:
            raise ValueError(f"run {mode!r}: steps must increase, got {prev.step} then {cur.step}")
        if len(cur.kept_tokens) != len(prev.kept_tokens) or len(cur.token_ids) != len(prev.token_ids):
            raise ValueError(f"run {mode!r}: layer or batch count changes at step {cur.step}")
    return run


# Records already checked, by identity: a live view redraws the same (never mutated) records many times.
_CHECKED: "weakref.WeakValueDictionary[int, StepRecord]" = weakref.WeakValueDictionary()


def as_record(record) -> StepRecord:
    """A validated StepRecord from a StepRecord or its dict form."""
    if _CHECKED.get(id(record)) is record:
        return record
    if isinstance(record, dict):
        _check_keys("StepRecord", record, StepRecord)
        attention = record.get("attention")
        if attention is not None:
            _check_list("attention", attention)
            attention = [_as_layer_attention(a) for a in attention]
        record = StepRecord(**{**record, "attention": attention})
    if not isinstance(record, StepRecord):
        raise ValueError(f"expected a StepRecord or its dict, got {type(record).__name__}")
    _check_record(record)
    _CHECKED[id(record)] = record
    return record


def as_report(report) -> RecencyReport:
    """A validated RecencyReport from a RecencyReport or its dict form."""
    if isinstance(report, dict):
        _check_keys("RecencyReport", report, RecencyReport)
        report = RecencyReport(**report)
    if not isinstance(report, RecencyReport):
        raise ValueError(f"expected a RecencyReport or its dict, got {type(report).__name__}")
    _check_report(report)
    return report


# ---------------------------------------------------------------------------- field checks

def _check_keys(kind: str, data: dict, cls) -> None:
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    if missing := required - data.keys():
        raise ValueError(f"{kind} dict is missing {sorted(missing)}")
    if unknown := data.keys() - names:
        raise ValueError(f"{kind} dict has unknown keys {sorted(unknown)}")


def _as_layer_attention(item) -> LayerAttention:
    if isinstance(item, dict):
        _check_keys("LayerAttention", item, LayerAttention)
        item = LayerAttention(**item)
    if not isinstance(item, LayerAttention):
        raise ValueError(f"attention entries must be LayerAttention or dicts, got {type(item).__name__}")
    return item


def _check_int(name: str, value, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(name: str, value, minimum: float = 0.0, maximum: float = math.inf) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a finite number in [{minimum}, {maximum}], got {value!r}")


def _check_list(name: str, value, length: int | None = None) -> None:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(value)}")


def _check_ints(name: str, values, length: int | None = None) -> None:
    """Ints >= 0; written as whole-list checks because kept_positions can hold L x T entries per step."""
    _check_list(name, values, length)
    if not set(map(type, values)) <= {int} or (values and min(values) < 0):
        raise ValueError(f"{name} must hold ints >= 0, got {list(values)[:8]!r}...")


def _check_weights(name: str, values) -> None:
    """Finite numbers >= 0 (a NaN or inf makes the sum non-finite: weights are at most 1)."""
    if not set(map(type, values)) <= {int, float} or (values and min(values) < 0):
        raise ValueError(f"{name} must hold numbers >= 0, got {list(values)[:8]!r}...")
    if not math.isfinite(sum(values)):
        raise ValueError(f"{name} holds a NaN or infinite weight")


def _check_record(r: StepRecord) -> None:
    _check_int("step", r.step)
    where = f"step {r.step}"
    if r.phase not in PHASES:
        raise ValueError(f"{where}: phase must be one of {PHASES}, got {r.phase!r}")
    if (r.step == 0) != (r.phase == "prefill"):
        raise ValueError(f"{where}: step 0 and only step 0 is the prefill, got phase {r.phase!r}")
    _check_ints(f"{where}: token_ids", r.token_ids)
    batch, layers = len(r.token_ids), len(r.kept_tokens)
    if batch == 0:
        raise ValueError(f"{where}: token_ids is empty")
    _check_list(f"{where}: finished", r.finished, batch)
    if not all(isinstance(f, bool) for f in r.finished):
        raise ValueError(f"{where}: finished must hold bools, got {r.finished!r}")
    _check_ints(f"{where}: kept_tokens", r.kept_tokens)
    _check_list(f"{where}: kept_tokens_per_row", r.kept_tokens_per_row, batch)
    for b, row in enumerate(r.kept_tokens_per_row):
        _check_ints(f"{where}: kept_tokens_per_row[{b}]", row, layers)
    if list(r.kept_tokens_per_row[0]) != list(r.kept_tokens):
        raise ValueError(f"{where}: kept_tokens_per_row[0] must equal kept_tokens (both the first sequence)")
    _check_int(f"{where}: kv_bytes", r.kv_bytes)
    _check_int(f"{where}: peak_kv_bytes", r.peak_kv_bytes, minimum=r.kv_bytes)
    _check_number(f"{where}: step_time_s", r.step_time_s)
    _check_int(f"{where}: seen_tokens", r.seen_tokens)
    if not isinstance(r.policy, dict):
        raise ValueError(f"{where}: policy must be a dict, got {type(r.policy).__name__}")
    if r.kept_positions is not None:
        _check_kept_positions(where, r.kept_positions, r.kept_tokens)
    if r.attention is not None:
        _check_attention(where, r.attention, layers)


def _check_kept_positions(where: str, kept_positions, kept_tokens) -> None:
    _check_list(f"{where}: kept_positions", kept_positions, len(kept_tokens))
    for layer, positions in enumerate(kept_positions):
        name = f"{where}: kept_positions[{layer}]"
        _check_ints(name, positions, kept_tokens[layer])
        if len(set(positions)) != len(positions):
            raise ValueError(f"{name} holds a position twice")


def _check_attention(where: str, attention, layers: int) -> None:
    _check_list(f"{where}: attention", attention)
    seen = set()
    for a in attention:
        if not isinstance(a, LayerAttention):
            raise ValueError(f"{where}: attention entries must be LayerAttention, got {type(a).__name__}")
        name = f"{where}: attention of layer {a.layer}"
        _check_int(name, a.layer)
        if a.layer >= layers or a.layer in seen:
            raise ValueError(f"{name}: layer must be unique and below {layers}")
        seen.add(a.layer)
        _check_ints(f"{name}: positions", a.positions)
        _check_int(f"{name}: num_queries", a.num_queries, minimum=1)
        _check_list(f"{name}: weights", a.weights)
        if len(a.weights) == 0:
            raise ValueError(f"{name}: weights has no heads")
        for h, row in enumerate(a.weights):
            _check_list(f"{name}: weights[{h}]", row, len(a.positions))
            _check_weights(f"{name}: weights[{h}]", row)


def _check_report(r: RecencyReport) -> None:
    _check_int("window", r.window)
    _check_int("sink_len", r.sink_len)
    _check_int("heads_per_group", r.heads_per_group, minimum=1)
    _check_list("scores", r.scores)
    _check_list("sink_mass", r.sink_mass, len(r.scores))
    heads = len(r.scores[0]) if r.scores else 0
    if heads % r.heads_per_group:
        raise ValueError(f"{heads} query heads do not split into groups of {r.heads_per_group}")
    for name, table in (("scores", r.scores), ("sink_mass", r.sink_mass)):
        for layer, row in enumerate(table):
            _check_list(f"{name}[{layer}]", row, heads)
            for s in row:
                _check_number(f"{name}[{layer}]", s, maximum=1.0 + SCORE_TOLERANCE)
    _check_list("replaced", r.replaced)
    for pair in r.replaced:
        _check_ints("replaced pair", pair, 2)
        if pair[0] >= len(r.scores) or pair[1] >= heads // r.heads_per_group:
            raise ValueError(f"replaced pair {pair} is outside {len(r.scores)} layers x "
                             f"{heads // r.heads_per_group} KV groups")
