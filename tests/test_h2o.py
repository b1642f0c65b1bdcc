"""H2O: the heavy hitters and recent window a paper-faithful loop keeps, a fixed cache size, the budget."""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.policies import H2OPolicy
from tests.hf_reference import NaiveLlama, random_prompt as prompt
from tests.tiny_models import tiny_model

LAYERS = 4


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=LAYERS, max_position_embeddings=1024)



def h2o_reference(lm, tokens: list[int], prompt_len: int, kv_budget: float, recent_share: float):
    """H2O written out token by token (one set per layer, scores summed over heads): per layer, the
    positions held after the prefill and after each later token. `tokens` is the prompt, then the
    tokens the engine generated (fed here as they were, so only the selection rule is compared)."""
    budget = min(prompt_len, max(1, round(kv_budget * prompt_len)))
    recent = int(recent_share * budget)
    model = NaiveLlama(lm)
    scores = [dict() for _ in range(LAYERS)]
    held = [None] * LAYERS
    history = []

    def vote_and_evict(layer, probs, seen):
        column = probs.sum(0).sum(0)  # attention each key received, summed over heads and this call's queries
        positions = sorted(held[layer] | {seen - 1}) if held[layer] is not None else list(range(seen))
        for j in positions:
            scores[layer][j] = scores[layer].get(j, 0.0) + column[j].item()
        kept = set(positions)
        while len(kept) > budget:  # the lowest score outside the recent window goes (the newer on a tie)
            old = [j for j in kept if j < seen - recent]
            kept.remove(min(old, key=lambda j: (scores[layer][j], -j)))
        held[layer] = kept

    model.forward(tokens[:prompt_len], 0, None, lambda l, p: vote_and_evict(l, p, prompt_len))
    history.append([sorted(s) for s in held])
    for step in range(prompt_len, len(tokens)):
        model.forward([tokens[step]], step, held, lambda l, p: vote_and_evict(l, p, step + 1))
        history.append([sorted(s) for s in held])
    return history


@pytest.mark.parametrize("n, kv_budget, recent_share", [(90, 0.3, 0.5), (12, 1.0, 0.25)])
def test_kept_positions_equal_a_token_by_token_reference(lm, n, kv_budget, recent_share):
    """Long prompts test the prefill's votes; a short one, decoding's (generated tokens must earn their place)."""
    ids = prompt(n, seed=1)
    policy = H2OPolicy(kv_budget=kv_budget, recent_share=recent_share)
    records = list(generate(lm, ids, policy=policy, max_new_tokens=60, record_positions=True))
    tokens = ids[0].tolist() + [r.token_ids[0] for r in records[:-1]]  # the last sampled token is never fed
    with torch.no_grad():
        reference = h2o_reference(lm, tokens, n, kv_budget, recent_share)
    assert [r.kept_positions for r in records] == reference
    # the test means something only if some heavy hitter is not among the oldest tokens
    end, recent = n + 59, int(recent_share * round(kv_budget * n))
    heavy = set(reference[-1][-1]) - set(range(end - recent, end))
    assert heavy != set(range(len(heavy)))


def test_cache_size_is_fixed_by_the_prompt_and_recent_tokens_stay(lm):
    records = list(generate(lm, prompt(200, seed=2), policy=H2OPolicy(kv_budget=0.25), max_new_tokens=20,
                            record_positions=True))
    for r in records:
        assert r.kept_tokens == [50] * LAYERS  # round(0.25 x 200), at every step
        assert all(layer[-25:] == list(range(r.seen_tokens - 25, r.seen_tokens)) for layer in r.kept_positions)


def test_a_prompt_within_the_budget_is_kept_whole(lm):
    first = next(generate(lm, prompt(30, seed=3), policy=H2OPolicy(kv_budget=1.0), max_new_tokens=1))
    assert first.kept_tokens == [30] * LAYERS


@pytest.mark.parametrize("bad", [{"kv_budget": 0}, {"kv_budget": 1.5}, {"recent_share": -0.1}])
def test_bad_knobs_name_the_knob(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        H2OPolicy(**bad)
