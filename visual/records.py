"""Trace records in, validated dataclasses out: the one normalising step every figure goes through.

Figures accept the engine's dataclasses (`StepRecord`, `LayerAttention`, `RecencyReport`) or their dict
form (`to_dict()` / JSON). The records check their own fields when they are made (trace.py); here dicts
become records, and a run is checked as a whole. Anything that breaks the contract raises ValueError
naming the field; nothing here is caught.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from pyramid_core.trace import LayerAttention, RecencyReport, StepRecord



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


def as_record(record) -> StepRecord:
    """A StepRecord from a StepRecord (checked when it was made) or its dict form (checked here)."""
    if isinstance(record, dict):
        _check_keys("StepRecord", record, StepRecord)
        attention = record.get("attention")
        if attention is not None:
            if not isinstance(attention, (list, tuple)):
                raise ValueError(f"attention must be a list, got {type(attention).__name__}")
            attention = [_as_layer_attention(a) for a in attention]
        record = StepRecord.from_dict({**record, "attention": attention})
    if not isinstance(record, StepRecord):
        raise ValueError(f"expected a StepRecord or its dict, got {type(record).__name__}")
    return record


def as_report(report) -> RecencyReport:
    """A validated RecencyReport from a RecencyReport or its dict form."""
    if isinstance(report, dict):
        _check_keys("RecencyReport", report, RecencyReport)
        report = RecencyReport(**report)
    if not isinstance(report, RecencyReport):
        raise ValueError(f"expected a RecencyReport or its dict, got {type(report).__name__}")
    return report


# ---------------------------------------------------------------------------- dict forms

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
