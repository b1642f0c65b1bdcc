"""Warm-up reported apart (issue 19): a step that did one-time work (a graph capture, a kernel
compilation) is recorded as warm-up, the decode rate leaves it out, and the CLI JSON, RunSummary, the
summary table and the panes show its time on its own. One-time work is injected on a CPU by making the
graph capture (or the first decode step) sleep."""

import json
import threading
import time

import pytest
import torch

from pyramid_core import engine, metrics, warmup
from pyramid_core.cli import main
from pyramid_core.graphs import GraphStore
from pyramid_core.trace import RunSummary, StepRecord
from studio.panes import pane_stats
from tests.tiny_models import tiny_model

ONE_TIME_S = 0.3


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=2)


def slow_capture(monkeypatch):
    """Graph captures that take ONE_TIME_S longer, as a GPU's capture does."""
    real = engine.DecodeGraphs

    def capture(*args, **kwargs):
        time.sleep(ONE_TIME_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "DecodeGraphs", capture)


def run(lm, new_tokens=6):
    ids = torch.tensor([[5, 9, 13, 2, 7]])
    return list(engine.generate(lm, ids, max_new_tokens=new_tokens, cuda_graphs=True))


def test_a_graph_capture_is_warmup_and_the_decode_rate_leaves_its_step_out(lm, monkeypatch):
    monkeypatch.setattr(lm, "decode_graphs", GraphStore())  # nothing captured yet for this model
    slow_capture(monkeypatch)
    records = run(lm)
    assert records[1].warmup_s == records[1].step_time_s >= ONE_TIME_S  # the capturing step, whole
    assert [r.warmup_s for r in records if r.step != 1] == [0.0] * (len(records) - 1)
    warm = records[2:]
    expected = len(warm) / sum(r.step_time_s for r in warm)  # batch 1: one token per decode step
    assert metrics.decode_tokens_per_s(records) == pytest.approx(expected)
    assert metrics.decode_tokens_per_s(records) > 3 * (len(records) - 1) / sum(r.step_time_s for r in records[1:])
    summary = RunSummary.of(records)
    assert summary.warmup_s == records[1].step_time_s
    assert summary.decode_tokens_per_s == pytest.approx(expected)

    again = run(lm)  # the graphs are kept: nothing is captured, nothing is warm-up
    assert RunSummary.of(again).warmup_s == 0.0


def test_without_one_time_work_nothing_is_warmup(lm):
    ids = torch.tensor([[5, 9, 13, 2, 7]])
    records = list(engine.generate(lm, ids, max_new_tokens=5, cuda_graphs=False))  # eager on a CPU
    assert all(r.warmup_s == 0.0 for r in records)
    assert metrics.decode_tokens_per_s(records) == pytest.approx(4 / sum(r.step_time_s for r in records[1:]))


def test_a_kernel_variant_is_warmup_at_its_first_launch_only():
    key = ("test kernel", object())
    before = warmup.count()
    assert warmup.first_time(key) and warmup.count() == before + 1
    assert not warmup.first_time(key) and warmup.count() == before + 1


def test_another_threads_one_time_work_is_not_this_threads():
    before = warmup.count()
    worker = threading.Thread(target=warmup.note)
    worker.start()
    worker.join()
    assert warmup.count() == before


def record(step, time_s, warmup_s=0.0):
    return StepRecord(step=step, phase="prefill" if step == 0 else "decode", token_ids=[7], finished=[False],
                      kept_tokens=[3], kept_tokens_per_row=[[3]], kv_bytes=10, peak_kv_bytes=10,
                      step_time_s=time_s, seen_tokens=10 + step, warmup_s=warmup_s)


def test_warmup_is_checked_as_a_part_of_the_step_time():
    with pytest.raises(ValueError, match="warmup_s"):
        record(1, 0.1, warmup_s=0.2)
    with pytest.raises(ValueError, match="warmup_s"):
        record(1, 0.1, warmup_s=-0.01)
    data = record(1, 0.1).to_dict()
    del data["warmup_s"]  # a trace exported before the field existed
    assert StepRecord.from_dict(data).warmup_s == 0.0


def test_the_pane_and_the_summary_table_show_the_warmup_apart():
    import visual

    run_ = [record(0, 0.05), record(1, 0.5, warmup_s=0.5), record(2, 0.01), record(3, 0.01)]
    text = pane_stats(run_, "abc", None)
    assert "**100.0 tokens/s** (warm-up 0.50 s apart)" in text
    assert "warm-up" not in pane_stats([record(0, 0.05), record(1, 0.01)], "abc", None)
    row = visual.summary_rows({"baseline": run_})[0]
    assert row["warmup_s"] == 0.5 and row["tokens_per_s"] == pytest.approx(100.0)
    assert "warm-up (s)" in visual.summary_table_markdown([row])


def test_cli_json_reports_the_warmup_apart(checkpoint, monkeypatch, capsys):
    calls = []

    def first_decode_step_warms_up(*args, **kwargs):  # the first decode step does one-time work
        calls.append(1)
        if len(calls) == 2:
            time.sleep(ONE_TIME_S)
            warmup.note()
        return real(*args, **kwargs)

    real = engine.sample
    monkeypatch.setattr(engine, "sample", first_decode_step_warms_up)
    assert main(["generate", "--model", str(checkpoint), "--prompt", "the cat sat", "--json",
                 "--max-new-tokens", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["warmup_s"] >= ONE_TIME_S
    # with the sleep inside, 4 decode tokens could not reach 4 / ONE_TIME_S tokens/s
    assert out["decode_tokens_per_s"] > 4 / ONE_TIME_S
