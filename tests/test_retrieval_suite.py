"""The retrieval suite (pyramid_core/retrieval.py, `pyramid eval --suite retrieval`) on a tiny model: which
modes run at which budgets (from the registry), the rows, the share reached measured from the engine,
refusals, and the CLI's JSON and Markdown."""

import gzip
import json
from dataclasses import dataclass

import pytest

from pyramid_core import generate, reading, retrieval
from pyramid_core.budget import Budget, solve
from pyramid_core.models import wrap_model
from pyramid_core.policies import ALL_POLICIES, StreamingPolicy
from pyramid_core.retrieval_report import accuracy_at, retrieval_markdown
from tests.test_reading_eval import hf_greedy
from tests.tiny_models import tiny_model, tiny_tokenizer

SETTINGS = retrieval.SuiteSettings(lengths=(512, 1024), depths=(0.0, 1.0), per_cell=1, budgets=(0.3, 0.6),
                                   grid_budget=0.3)
PROMPTS = ["the cat sat on the mat and a dog ran far away " * 6, "a dog ran far away " * 9,
           "the mat sat on a cat far away " * 7, "a cat ran on the mat " * 10]


@pytest.fixture(scope="module", autouse=True)
def short_answers():
    """The tiny model never writes a newline, so every answer would run to MAX_ANSWER_TOKENS: 6 is enough."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reading, "MAX_ANSWER_TOKENS", 6)
        yield


@pytest.fixture(scope="module")
def lm():
    return wrap_model(tiny_model("llama", seed=3).model, tiny_tokenizer(), name="tiny")


@pytest.fixture(scope="module")
def knobs(lm, tmp_path_factory):
    """A RecurFormer adapter for the tiny model, given to both RecurFormer modes."""
    from tests.test_recurformer_engine import make_adapter

    adapter = make_adapter(lm, tmp_path_factory.mktemp("adapter"), [[1, 0], [3, 1]])
    return {"recurformer": {"adapter": adapter}, "pyramid+recurformer": {"adapter": adapter}}


@pytest.fixture(scope="module")
def tasks(lm):
    """One task per (length, depth) cell of SETTINGS; the first two are answered right by greedy decoding
    (their answer is transformers' own greedy answer), the last two cannot be."""
    stops = reading.newline_ids(lm.tokenizer) + [lm.tokenizer.eos_token_id]
    cells = [(512, 0.0), (512, 1.0), (1024, 0.0), (1024, 1.0)]
    out = []
    for i, (prompt, (length, depth)) in enumerate(zip(PROMPTS, cells)):
        answer = hf_greedy(lm, lm.tokenizer, prompt, stops).split("\n", 1)[0].strip() if i < 2 else "no such answer"
        out.append({"kind": "single", "length": length, "depth": depth, "prompt": prompt, "answer": answer})
    return out


def test_select_tasks_keeps_the_settings_cells():
    stored = [{"kind": k, "length": n, "depth": d} for k in ("single", "story") for n in (512, 2048)
              for d in (0.0, 0.5, 1.0) for _ in range(2)]
    chosen = retrieval.select_tasks(stored, SETTINGS)
    assert [(t["kind"], t["length"], t["depth"]) for t in chosen] == [("single", 512, 0.0), ("single", 512, 1.0)]


def test_plan_takes_every_registered_mode(lm, knobs):
    points = retrieval.plan(lm, [0.3, 0.6], knobs=knobs)
    runs = {}
    for p in points:
        runs.setdefault(p.mode, []).append(p.budget)
    assert list(runs) == list(ALL_POLICIES)  # a mode added to the registry joins the suite
    assert runs["baseline"] == [None]
    assert runs["pyramid"] == runs["streaming"] == [0.3, 0.6]
    assert runs["recurformer"] == runs["pyramid+recurformer"] == [None]  # at their adapter's own share


@dataclass
class WindowTwin(StreamingPolicy):
    """A new budgeted mode, as H2O and SnapKV will be: a dataclass with kv_budget and configure."""

    name = "window-twin"


def test_a_new_budgeted_mode_runs_at_every_budget(lm, monkeypatch):
    monkeypatch.setitem(ALL_POLICIES, "window-twin", WindowTwin)
    budgets = {p.budget for p in retrieval.plan(lm, [0.3, 0.6]) if p.mode == "window-twin"}
    assert budgets == {0.3, 0.6}


@pytest.fixture(scope="module")
def result(lm, tasks, knobs):
    return retrieval.run_suite(lm, tasks, SETTINGS, batch=4, knobs=knobs)


def test_rows_score_the_answers(result, tasks):
    modes = [p["mode"] for p in result["points"]]
    assert modes == ["baseline", "pyramid", "pyramid", "streaming", "streaming", "h2o", "h2o", "snapkv", "snapkv",
                     "recurformer", "pyramid+recurformer"]
    base = result["points"][0]
    assert base["right"] == [True, True, False, False]
    assert base["accuracy"] == {"single": 0.5} and base["refused"] == 0
    assert base["grid"] == {"512": {"0": 1.0, "1": 1.0}, "1024": {"0": 0.0, "1": 0.0}}
    answered = [p for p in result["points"] if p["refusal"] is None]
    assert len(answered) == len(modes) - 1  # pyramid at 0.3: out of reach on these short prompts
    assert all(len(p["right"]) == len(tasks) and None not in p["right"] for p in answered)


def measured_share(lm, task, policy) -> float:
    """The reference: one task alone, its share at each step computed here from the cache counts."""
    stops = reading.newline_ids(lm.tokenizer) + [lm.tokenizer.eos_token_id]
    ids = lm.tokenizer(task["prompt"], return_tensors="pt").input_ids
    shares = []
    for r in generate(lm, ids, policy=policy, max_new_tokens=reading.MAX_ANSWER_TOKENS, eos_token_id=stops):
        kept = r.kept_tokens
        shares.append(sum(kept) / (len(kept) * r.seen_tokens))
        if r.finished[0]:
            break
    return sum(shares) / len(shares)


@pytest.mark.parametrize("mode, budget", [("streaming", 0.3), ("pyramid", 0.6), ("h2o", 0.3), ("snapkv", 0.6)])
def test_share_reached_is_measured_from_the_engine(lm, tasks, result, mode, budget):
    """The suite's shares equal single runs of each task under the policy solved for the batch (all four
    tasks: its longest prompt), and land near the budget asked."""
    from pyramid_core.policies.registry import make_policy

    point = next(p for p in result["points"] if p["mode"] == mode and p["budget"] == budget)
    longest = max(len(ids) for ids in lm.tokenizer([t["prompt"] for t in tasks]).input_ids)
    policy = solve(make_policy(mode), Budget(share=budget), longest, reading.MAX_ANSWER_TOKENS,
                   lm.config.num_hidden_layers)
    expected = [measured_share(lm, t, policy) for t in tasks]
    assert point["shares"] == pytest.approx(expected, abs=1e-4)  # batched, padded rows equal single runs
    assert point["kv_share"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert point["kv_share"] == pytest.approx(budget, abs=0.03)


def test_baseline_holds_everything_and_recurformer_loses_its_replaced_groups(result):
    shares = {p["mode"]: p["kv_share"] for p in result["points"] if p["budget"] is None}
    assert shares["baseline"] == pytest.approx(1.0)
    assert shares["recurformer"] == pytest.approx(1 - 2 / 8)  # 2 of 4 layers x 2 groups replaced


def test_needle_grids_at_the_grid_budget(result):
    assert list(result["grids"]) == ["baseline", "pyramid", "streaming", "h2o", "snapkv", "recurformer",
                                     "pyramid+recurformer"]
    assert result["grids"]["streaming"]["budget"] == 0.3 and result["grids"]["baseline"]["budget"] is None
    point = next(p for p in result["points"] if p["mode"] == "streaming" and p["budget"] == 0.3)
    assert result["grids"]["streaming"]["grid"] == point["grid"]


@dataclass
class Fussy(StreamingPolicy):
    """Refuses, while it runs, to hold under half of the cache (as a policy may find only then)."""

    name = "fussy"

    def prefill(self, ctx):
        if self.kv_budget < 0.5:
            raise ValueError("out of reach for this prompt")
        return super().prefill(ctx)


@pytest.mark.parametrize("mode", ["pyramid", "fussy"])
def test_refused_budgets_are_reported_not_scored(lm, tasks, monkeypatch, mode):
    """Refused by the solver (PyramidInfer cannot hold 0.3 of these short prompts) or by the policy as it
    runs: the row says why and scores nothing."""
    monkeypatch.setitem(ALL_POLICIES, "fussy", Fussy)
    rows = {p.budget: retrieval.run_point(lm, tasks, p, batch=4)
            for p in retrieval.plan(lm, [0.3, 0.6]) if p.mode == mode}
    assert rows[0.3]["refused"] == len(tasks) and rows[0.3]["accuracy"] == {} and rows[0.3]["kv_share"] is None
    assert "out of reach" in rows[0.3]["refusal"]
    assert rows[0.6]["refused"] == 0 and rows[0.6]["refusal"] is None


def test_accuracy_at_interpolates_within_a_curve_only():
    points = [{"mode": "m", "kv_share": s, "accuracy": {"single": a}} for s, a in ((0.2, 0.1), (0.6, 0.5))]
    assert accuracy_at(points, "m", 0.4) == pytest.approx(0.3)
    assert accuracy_at(points, "m", 0.6) == pytest.approx(0.5)
    assert accuracy_at(points, "m", 0.603) == pytest.approx(0.5)  # a rounding past the end reads the end
    assert accuracy_at(points, "m", 0.7) is None and accuracy_at(points, "other", 0.4) is None


def test_cli_writes_the_json_and_markdown(tmp_path, lm, tasks, monkeypatch):
    """`pyramid eval --suite retrieval` (the console script's main) over a task file. The RecurFormer modes'
    default adapter is the embedded model's, so on the tiny model their rows say why they did not run."""
    from pyramid_core.cli import main, suite

    path = tmp_path / "tasks.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(t) + "\n" for t in tasks[:2])
    monkeypatch.setattr(suite, "load_model", lambda *a, **k: lm)
    monkeypatch.setattr(retrieval, "DEFAULT", retrieval.SuiteSettings(lengths=(512,), depths=(0.0, 1.0),
                                                                      budgets=(0.6,), grid_budget=0.6))
    out = tmp_path / "retrieval"
    assert main(["eval", "--suite", "retrieval", "--reading-file", str(path), "--out", str(out), "--json"]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["modes"] == list(ALL_POLICIES) and len(saved["tasks"]) == 2
    md = out.with_suffix(".md").read_text()
    assert md == retrieval_markdown(saved)
    for p in saved["points"]:
        budget = "own" if p["budget"] is None else f"{p['budget']:g}"
        share = "-" if p["kv_share"] is None else f"{p['kv_share']:.3f}"
        assert f"| {p['mode']} | {budget} | {share} |" in md
    refused = {p["mode"] for p in saved["points"] if p["refusal"]}
    assert refused == {"recurformer", "pyramid+recurformer"} and "adapter" in md.split("Refused:")[1]
    assert "## What it shows" in md and "Needle grids" in md
