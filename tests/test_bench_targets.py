"""`bench targets` (pyramid_core/bench/targets.py): issue 19's targets read off one run's results, on a CPU. The
results here are written by hand, small, with the verdicts a reader would give them."""

import json

from pyramid_core.bench import targets
from pyramid_core.cli import main

ENV = {"gpu": "NVIDIA H200", "date": "2026-12-01", "torch": "2.11", "transformers": "5.17", "triton": "3.6"}


def cell(shape, batch, prompt, mode, ratio, share=None, timed=64):
    return {"shape": shape, "batch": batch, "prompt": prompt, "mode": mode, "vs_baseline": ratio,
            "policy_share": share, "policy_run_tokens": timed}


MODES = {"environment": ENV, "cells": [
    cell("embedded", 1, 1024, "baseline", 1.0, 0.0), cell("embedded", 1, 1024, "pyramid", 0.97, 0.0),
    cell("llama2-7b", 8, 8192, "pyramid", 0.93), cell("embedded", 1, 1024, "streaming", 1.2, 0.0),
    cell("llama2-7b", 1, 8192, "streaming", 0.96, 0.0)]}
ROOFLINE = {"environment": ENV, "rows": [
    {"path": "per-layer graphs", "batch": 1, "prompt": 1024, "roofline_share": 0.40},
    {"path": "whole-step graph", "batch": 1, "prompt": 1024, "roofline_share": 0.61},
    {"path": "whole-step graph", "batch": 1, "prompt": 8192, "roofline_share": 0.59}]}


def largest(method, batch, rate):
    return {"max_batch": batch, "run": {"method": method, "batch": batch, "tokens_per_s": rate}}


TABLE1 = {"environment": ENV, "max_batch": {"hf-generate": largest("hf-generate", 58, 1000.0),
                                            "engine-baseline": largest("engine-baseline+reserve", 70, 1600.0),
                                            "pyramid-45": largest("pyramid-45+reserve", 130, 3100.0)}}


def by_target(rows):
    return {r["target"].split(" >=")[0].split(" <=")[0]: r for r in rows}


def test_each_target_is_judged_by_its_worst_case():
    rows = by_target(targets.verdicts(MODES, ROOFLINE, TABLE1))
    assert rows["pyramid"]["met"] is False and "0.93x at llama2-7b, batch 8, prompt 8192" in rows["pyramid"]["measured"]
    assert rows["streaming"]["met"] is True and "0.96x" in rows["streaming"]["measured"]
    assert "baseline" not in rows  # the baseline is what the others are measured against
    assert rows["7B batch-1 step"]["met"] is False  # 59% at 8k, though 61% at 1k; the per-layer row is not judged
    assert "40.0%" not in rows["7B batch-1 step"]["measured"]
    hf, own = (r for r in targets.table1_verdicts(TABLE1))
    assert hf["met"] is True and hf["measured"].startswith("3.10x")
    assert own["met"] is False and own["measured"].startswith("1.94x")


def test_a_policy_share_without_a_cut_is_not_measured():
    """PyramidInfer's quiet steps ask its policy nothing: a run that reached no decode-time cut times 0%, which
    says nothing about the 5% target."""
    assert targets.policy_verdict(MODES)["met"] is None
    timed = {"cells": [cell("llama2-7b", 1, 1024, "pyramid", 0.98, 0.051, 400),
                       cell("llama2-7b", 1, 1024, "h2o", 0.9, 0.002, 400)]}
    verdict = targets.policy_verdict(timed)
    assert verdict["met"] is False and verdict["measured"].startswith("5.1% at llama2-7b")
    timed["cells"][0]["policy_share"] = 0.049
    assert targets.policy_verdict(timed)["met"] is True


def test_the_cli_summarises_a_folder_without_a_gpu(tmp_path, capsys):
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 2
    assert "missing modes_quick_reserve_kv.json" in capsys.readouterr().err
    for key, data in (("modes", MODES), ("roofline", ROOFLINE), ("table1", TABLE1)):
        (tmp_path / targets.FILES[key]).write_text(json.dumps(data))
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 0
    written = (tmp_path / "targets.md").read_text()
    assert written.startswith("# targets\n\nNVIDIA H200, 2026-12-01")  # the run's card, not this machine's
    assert "| pyramid >= 0.95x the baseline in every cell | 0.93x" in written and "not measured" in written
    summary = json.loads((tmp_path / "targets.json").read_text())
    assert summary["all_met"] is False and summary["one_card"] is True and "NOT one card" not in written
    (tmp_path / targets.FILES["table1"]).write_text(json.dumps({**TABLE1, "environment": {**ENV, "gpu": "H100"}}))
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 0
    assert "NOT one card" in (tmp_path / "targets.md").read_text()


def test_a_run_without_the_roofline_or_table1_judges_the_rest(tmp_path):
    """A call that ran only `bench modes` still gets its modes' verdicts; the targets it did not measure are
    said to be missing, and the run does not count as meeting everything."""
    good = {"environment": ENV, "cells": [cell("embedded", 1, 1024, "baseline", 1.0),
                                          cell("embedded", 1, 1024, "pyramid", 0.99, 0.04, 400)]}
    (tmp_path / targets.FILES["modes"]).write_text(json.dumps(good))
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "targets.json").read_text())
    met = {r["target"].split(" >=")[0].split(" <=")[0].split(":")[0]: r["met"] for r in summary["rows"]}
    assert met["pyramid"] is True and met["PyramidInfer's policy"] is True
    assert met["7B batch-1 step"] is None and met["Table 1"] is None
    assert summary["all_met"] is False and "not in this run" in (tmp_path / "targets.md").read_text()


def test_table1_under_expandable_segments_is_judged_where_the_call_ran_it(tmp_path):
    """gpu_run.sh table1_reserve_expandable writes Table 1 into a folder of its own; where a call ran it, its rows
    are the ones judged (the layout the allocator cannot fragment), and the verdict names the allocator."""
    (tmp_path / targets.FILES["modes"]).write_text(json.dumps(MODES))
    (tmp_path / targets.FILES["table1"]).write_text(json.dumps(TABLE1))  # 1.94x under the default allocator
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 0
    own = by_target(json.loads((tmp_path / "targets.json").read_text())["rows"])["Table 1: PyramidInfer"]
    assert own["met"] is False and own["target"].endswith("(the default allocator)")
    expandable = {**TABLE1, "environment": {**ENV, "cuda_alloc_conf": "expandable_segments:True"},
                  "max_batch": {**TABLE1["max_batch"], "pyramid-45": largest("pyramid-45+reserve", 140, 3300.0)}}
    (tmp_path / targets.TABLE1_EXPANDABLE).parent.mkdir()
    (tmp_path / targets.TABLE1_EXPANDABLE).write_text(json.dumps(expandable))
    assert main(["bench", "targets", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "targets.json").read_text())
    judged = [r for r in summary["rows"] if r["target"].startswith("Table 1")]
    assert [r["measured"][:5] for r in judged] == ["3.30x", "2.06x"] and all(r["met"] for r in judged)
    assert all(r["target"].endswith("(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)") for r in judged)
    assert summary["inputs"]["table1"] == targets.TABLE1_EXPANDABLE
