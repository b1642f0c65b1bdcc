"""SnapKV: the prompt tokens a paper-faithful loop keeps, the window, and nothing evicted while decoding."""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.policies import SnapKVPolicy
from tests.hf_reference import NaiveLlama, random_prompt as prompt
from tests.tiny_models import tiny_model

LAYERS = 4


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=LAYERS, max_position_embeddings=1024)



def snapkv_reference(lm, ids, keep: int, window: int, kernel: int, pooling: str) -> list[list[int]]:
    """SnapKV written out token by token (one vote per layer, averaged over heads): per layer, the
    prompt positions kept."""
    n = ids.shape[1]
    prefix = n - window
    kept = []

    def select(layer, probs):
        votes = [probs[:, -window:, j].sum().item() / probs.shape[0] for j in range(prefix)]
        pooled = []
        for j in range(prefix):  # neighbours outside the prefix count as zeros
            around = [votes[i] if 0 <= i < prefix else 0.0 for i in range(j - kernel // 2, j + kernel // 2 + 1)]
            pooled.append(max(around) if pooling == "maxpool" else sum(around) / kernel)
        best = sorted(range(prefix), key=lambda j: (-pooled[j], j))[:keep - window]  # ties: the older
        kept.append(sorted(best) + list(range(prefix, n)))

    with torch.no_grad():
        NaiveLlama(lm).forward(ids[0].tolist(), 0, None, select)
    return kept


@pytest.mark.parametrize("pooling, kernel", [("maxpool", 7), ("avgpool", 5), ("maxpool", 1)])
def test_kept_positions_equal_a_token_by_token_reference(lm, pooling, kernel):
    ids = prompt(120, seed=1)
    policy = SnapKVPolicy(kv_budget=0.3, window_size=8, kernel_size=kernel, pooling=pooling)
    first = next(generate(lm, ids, policy=policy, max_new_tokens=1))
    assert first.kept_positions == snapkv_reference(lm, ids, 36, 8, kernel, pooling)


def test_decoding_evicts_nothing(lm):
    policy = SnapKVPolicy(kv_budget=0.25, window_size=8)
    records = list(generate(lm, prompt(100, seed=2), policy=policy, max_new_tokens=10, record_positions=True))
    for r in records:
        assert r.kept_tokens == [25 + r.step] * LAYERS
        assert all(layer[:25] == records[0].kept_positions[i] for i, layer in enumerate(r.kept_positions))


def test_a_budget_below_the_window_keeps_the_window(lm):
    first = next(generate(lm, prompt(100, seed=3), policy=SnapKVPolicy(kv_budget=0.05, window_size=16),
                          max_new_tokens=1))
    assert first.kept_positions == [list(range(84, 100))] * LAYERS


@pytest.mark.parametrize("bad", [{"kv_budget": 1.2}, {"window_size": 0}, {"kernel_size": 4}, {"pooling": "l2"}])
def test_bad_knobs_name_the_knob(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SnapKVPolicy(**bad)
