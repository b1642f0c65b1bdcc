"""KV budgets (budget.py): one meaning (a share of the full cache held over the generation), planned from
the policies' own counting, reached within the tolerance, or refused naming the lowest reachable share."""

import json
import re

import pytest
import torch

from pyramid_core import generate
from pyramid_core.budget import TOLERANCE, Budget, solve
from pyramid_core.cli import main
from pyramid_core.policies import ALL_POLICIES, StreamingPolicy
from pyramid_core.policies.registry import make_policy
from tests.tiny_models import tiny_model

LAYERS = 8
PROMPT, NEW = 200, 80


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=LAYERS, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def adapter(lm, tmp_path_factory):
    from tests.test_recurformer_engine import make_adapter

    return make_adapter(lm, tmp_path_factory.mktemp("adapter"), [[2, 0], [6, 1]])


def prompt(n, seed=0):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def held_share(records) -> float:
    """Mean over the records of sum(kept) / (layers x seen), written out here, not taken from metrics."""
    return sum(sum(r.kept_tokens) / (LAYERS * r.seen_tokens) for r in records) / len(records)


# pyramid: short decode chunks, so decode compression fires within the run and the plan must follow it
BUDGET_CASES = {"pyramid": {"chunk_length": 4}, "streaming": {}, "h2o": {}, "snapkv": {"window_size": 8},
                "pyramid+recurformer": {"chunk_length": 4, "adapter": "adapter"}}


def test_every_budgeted_mode_has_a_case():
    assert set(BUDGET_CASES) == {m for m, cls in ALL_POLICIES.items() if cls.budget_knob is not None}


def case(mode, adapter):
    return make_policy(mode, {k: adapter if v == "adapter" else v for k, v in BUDGET_CASES[mode].items()})


@pytest.mark.parametrize("asked", [0.45, 0.6])
@pytest.mark.parametrize("mode", sorted(BUDGET_CASES))
def test_the_plan_is_what_the_engine_holds_and_reaches_the_budget(lm, adapter, mode, asked):
    policy = solve(case(mode, adapter), Budget(share=asked), PROMPT, NEW, LAYERS)
    records = list(generate(lm, prompt(PROMPT), policy=policy, max_new_tokens=NEW))
    # the policy's plan, made from lengths alone, is exactly what the cache held at every step
    assert [sum(r.kept_tokens) for r in records] == policy.planned_kv_tokens(PROMPT, NEW, LAYERS)
    assert abs(held_share(records) - asked) <= TOLERANCE
    assert records[0].policy["kv_share_asked"] == asked
    if mode.startswith("pyramid"):  # decode compression fired: some layer dropped tokens after the prefill
        assert any(b < a + NEW - 1 for a, b in zip(records[0].kept_tokens, records[-1].kept_tokens))


@pytest.mark.parametrize("mode, knobs", [("snapkv", {"window_size": 64}), ("pyramid", {})])
def test_a_budget_out_of_reach_is_refused_naming_the_lowest_share(mode, knobs):
    with pytest.raises(ValueError, match="out of reach") as refused:
        solve(make_policy(mode, knobs), Budget(share=0.05), 200, 20, LAYERS)
    lowest = float(re.search(r"lowest KV share it can hold is (\d\.\d+)", str(refused.value)).group(1))
    if mode == "snapkv":  # it keeps at least its window: worked out here by hand
        assert lowest == pytest.approx(sum((64 + k) / (200 + k) for k in range(20)) / 20, abs=1e-3)
    # the share named is reachable, and nothing lower is
    solved = solve(make_policy(mode, knobs), Budget(share=min(1.0, lowest + 0.01)), 200, 20, LAYERS)
    assert solved.budget_plan["kv_share_planned"] >= lowest - 1e-3


def test_kv_tokens_ask_for_the_share_a_cache_of_that_many_tokens_holds(lm):
    policy = solve(StreamingPolicy(), Budget(tokens=60), 200, 40, LAYERS)
    asked = sum(60 / (200 + k) for k in range(40)) / 40
    assert policy.budget_plan["kv_share_asked"] == pytest.approx(asked, abs=1e-4)
    records = list(generate(lm, prompt(200, seed=1), policy=policy, max_new_tokens=40))
    mean_tokens = sum(sum(r.kept_tokens) / LAYERS for r in records) / len(records)
    assert abs(mean_tokens - 60) <= 2


def test_a_share_above_one_is_refused_pointing_at_kv_tokens():
    for make in (lambda: Budget(share=2.0), lambda: StreamingPolicy(kv_budget=300)):
        with pytest.raises(ValueError, match=r"\(0, 1\].*kv_tokens"):
            make()
    with pytest.raises(ValueError, match="either"):
        Budget(share=0.3, tokens=10)
    with pytest.raises(ValueError, match="takes no KV budget"):
        solve(make_policy("baseline"), Budget(share=0.5), 100, 10, LAYERS)


# ----------------------------------------------------------------------------- the command line

LONG = "the cat sat on the mat and a dog ran far away " * 8


def test_cli_reports_the_share_asked_and_reached(checkpoint, capsys):
    assert main(["generate", "--model", checkpoint, "--prompt", LONG, "--json", "--max-new-tokens", "16",
                 "--mode", "pyramid", "--kv-budget", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kv_share_asked"] == 0.5 and abs(out["kv_share_reached"] - 0.5) <= TOLERANCE
    assert {"prefill_kv_tokens", "final_kv_tokens", "policy", "token_ids"} <= set(out)  # the keys it had
    assert main(["generate", "--model", checkpoint, "--prompt", LONG, "--json", "--max-new-tokens", "4",
                 "--mode", "streaming", "--kv-tokens", "40"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["kv_tokens_asked"] == 40


@pytest.mark.parametrize("flags, message", [
    (["--mode", "streaming", "--kv-budget", "2"], "--kv-tokens"),
    (["--mode", "baseline", "--kv-budget", "0.5"], "takes no KV budget"),
    (["--mode", "snapkv", "--kv-budget", "0.05"], "out of reach for snapkv"),
])
def test_cli_refuses_with_a_sentence_and_exit_code_2(checkpoint, capsys, flags, message):
    assert main(["generate", "--model", checkpoint, "--prompt", LONG, "--max-new-tokens", "4", *flags]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (weight loading may draw a progress bar above it)
    assert last.startswith("error: ") and message in last and "Traceback" not in err


def test_a_share_above_what_h2o_can_hold_is_refused_naming_the_highest():
    """H2O's cache stops growing at the prompt's size, so over a long generation even kv_budget 1 holds
    less than everything: the refusal names that ceiling (worked out here by hand), not a floor."""
    with pytest.raises(ValueError, match="highest KV share it can hold is") as refused:
        solve(make_policy("h2o"), Budget(share=0.95), 64, 72, LAYERS)
    highest = float(re.search(r"highest KV share it can hold is (\d\.\d+)", str(refused.value)).group(1))
    assert highest == pytest.approx(sum(64 / (64 + k) for k in range(72)) / 72, abs=0.02)
