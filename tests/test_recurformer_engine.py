"""RecurFormer inside the engine: replaced groups hold a state and no KV, and nothing else changes."""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.engine import teacher_forced_logits
from pyramid_core.policies import PyramidRecurFormerPolicy, RecurFormerPolicy
from pyramid_core.recurformer.adapter import Adapter, rnn_config, save_adapter
from pyramid_core.recurformer.convert import convert
from tests.tiny_models import tiny_model

REPLACED = [[1, 0], [3, 1]]  # 2 of the tiny model's 4 layers x 2 KV groups


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama")


def make_adapter(lm, directory, groups):
    if groups:
        ids = torch.randint(3, 97, (1, 96), generator=torch.Generator().manual_seed(0))
        adapter = convert(lm, groups, ids, steps=3, progress=False)
    else:
        adapter = Adapter(lm.name, [], rnn_config(lm).to_dict(), {})
    save_adapter(adapter, directory)
    return str(directory)


@pytest.fixture(scope="module")
def adapter(lm, tmp_path_factory):
    return make_adapter(lm, tmp_path_factory.mktemp("adapter"), REPLACED)


@pytest.fixture(scope="module", params=["plain", "taps"])
def any_adapter(request, lm, adapter, tmp_path_factory):
    """The adapter, and one whose RNNs also read the 2 previous values (random tap weights)."""
    if request.param == "plain":
        return adapter
    return make_tapped_adapter(lm, tmp_path_factory.mktemp("tapped"), REPLACED)


def make_tapped_adapter(lm, directory, groups, seed: int = 0) -> str:
    """An adapter whose RNNs also read the 2 previous values, with random tap weights (trained ones
    start at 0, which would hide the taps)."""
    ids = torch.randint(3, 97, (1, 96), generator=torch.Generator().manual_seed(seed))
    tapped = convert(lm, groups, ids, steps=3, progress=False, taps=3)
    gen = torch.Generator().manual_seed(seed + 1)
    for key in [k for k in tapped.state_dict if k.endswith(".taps")]:
        tapped.state_dict[key] = torch.randn(tapped.state_dict[key].shape, generator=gen) * 0.5
    save_adapter(tapped, directory)
    return str(directory)


def prompt(n, seed=1):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def test_replacing_nothing_is_the_baseline(lm, tmp_path):
    empty = make_adapter(lm, tmp_path, [])
    ids = prompt(30)
    base = [r.token_ids for r in generate(lm, ids, max_new_tokens=40)]
    assert [r.token_ids for r in generate(lm, ids, policy=RecurFormerPolicy(adapter=empty),
                                          max_new_tokens=40)] == base


def test_kv_bytes_fall_by_the_replaced_share_and_count_the_state(lm, adapter):
    ids = prompt(50)
    base = list(generate(lm, ids, max_new_tokens=10))[-1]
    recur = list(generate(lm, ids, policy=RecurFormerPolicy(adapter=adapter), max_new_tokens=10))[-1]
    cfg = lm.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    group_size = cfg.num_attention_heads // cfg.num_key_value_heads
    state_bytes = len(REPLACED) * group_size * head_dim * head_dim * 4  # [B=1, G, D, D] float32 each
    groups = cfg.num_hidden_layers * cfg.num_key_value_heads
    assert recur.kv_bytes - state_bytes == base.kv_bytes * (groups - len(REPLACED)) // groups
    # the state does not grow with the context
    longer = list(generate(lm, prompt(120), policy=RecurFormerPolicy(adapter=adapter), max_new_tokens=10))[-1]
    base_longer = list(generate(lm, prompt(120), max_new_tokens=10))[-1]
    assert longer.kv_bytes - state_bytes == base_longer.kv_bytes * (groups - len(REPLACED)) // groups


@pytest.mark.parametrize("policy", [RecurFormerPolicy, PyramidRecurFormerPolicy])
def test_prefill_state_continues_through_decode_steps(lm, any_adapter, policy):
    """The chunked scan (prefill) hands the one-step recurrence (decode) the same state: feeding the
    last tokens one by one gives the logits of prefilling them all."""
    chosen = policy(adapter=any_adapter) if policy is RecurFormerPolicy else policy(
        adapter=any_adapter, prefill_decay_ratio=1.0, gen_compress_ratio=1.0, gen_decay_ratio=1.0)
    ids = prompt(70, seed=2)
    whole = teacher_forced_logits(lm, ids, ids[:, :0], policy=chosen)[:, -1]
    stepped = teacher_forced_logits(lm, ids[:, :55], ids[:, 55:], policy=chosen)[:, -1]
    torch.testing.assert_close(stepped, whole, atol=1e-4, rtol=1e-4)


def test_replaced_groups_change_the_output(lm, adapter):
    ids = prompt(40, seed=3)
    base = teacher_forced_logits(lm, ids, ids[:, :0])
    recur = teacher_forced_logits(lm, ids, ids[:, :0], policy=RecurFormerPolicy(adapter=adapter))
    assert not torch.allclose(base, recur, atol=1e-3)


def test_left_padded_batch_matches_single_runs(lm, any_adapter):
    prompts = [prompt(n, seed=n)[0] for n in (20, 45)]
    ids = torch.zeros(2, 45, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, 45 - len(p):], mask[row, 45 - len(p):] = p, 1
    policy = RecurFormerPolicy(adapter=any_adapter)
    batch = list(generate(lm, ids, mask, policy=policy, max_new_tokens=20))
    for row, p in enumerate(prompts):
        single = list(generate(lm, p[None], policy=policy, max_new_tokens=20))
        assert [r.token_ids[row] for r in batch] == [r.token_ids[0] for r in single]


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no RecurFormer adapter"):
        RecurFormerPolicy(adapter=str(tmp_path))
