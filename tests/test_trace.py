"""Trace records check their fields once, where they are made (engine, JSON, a copy with replace)."""

import dataclasses

import pytest

from pyramid_core.trace import LayerAttention, RecencyReport, StepRecord
from tests.test_visual import make_record


def test_a_record_with_a_broken_field_cannot_be_made():
    good = make_record(0, [2, 1], 10, seen=3, kept_positions=[[0, 2], [1]])
    with pytest.raises(ValueError, match="kept_positions"):
        dataclasses.replace(good, kept_positions=[[0, 2]])  # a layer missing
    with pytest.raises(ValueError, match="peak_kv_bytes"):
        dataclasses.replace(good, peak_kv_bytes=5)  # below kv_bytes
    with pytest.raises(ValueError, match="prefill"):
        dataclasses.replace(good, step=3)  # a decode step with the prefill's phase
    with pytest.raises(ValueError, match="LayerAttention"):
        dataclasses.replace(good, attention=[{"layer": 0, "positions": [0], "weights": [[1.0]]}])



def test_a_record_read_from_a_dict_has_every_value_checked():
    good = make_record(0, [2, 1], 10, seen=3, kept_positions=[[0, 2], [1]])
    StepRecord.from_dict(good.to_dict())  # the unchanged record is fine
    assert dataclasses.replace(good, kept_positions=[[0, 0], [1]])  # the engine's: checked in shape only
    with pytest.raises(ValueError, match="twice"):
        StepRecord.from_dict({**good.to_dict(), "kept_positions": [[0, 0], [1]]})
    with pytest.raises(ValueError, match="NaN"):
        StepRecord.from_dict({**good.to_dict(), "attention": [LayerAttention(layer=0, positions=[0, 2],
                                                                             weights=[[0.5, float("nan")]])]})


def test_records_are_frozen():
    record = make_record(1, [2], 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.kv_bytes = 0
    report = RecencyReport(window=4, sink_len=1, scores=[[0.2, 0.9]], sink_mass=[[0.1, 0.0]], heads_per_group=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.replaced = [[0, 0]]
    with pytest.raises(ValueError, match="replaced pair"):
        dataclasses.replace(report, replaced=[[3, 0]])  # outside the report's one layer
    assert isinstance(StepRecord.from_dict(record.to_dict()), StepRecord)
