"""The engine with the full cache must be the Hugging Face model, token for token."""

import pytest
import torch

from pyramid_core import Sampling, generate
from pyramid_core.engine import teacher_forced_logits
from tests.tiny_models import CONFIGS, tiny_model

FAMILIES = sorted(CONFIGS)


def tokens(records, row=0):
    return [r.token_ids[row] for r in records]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_hf_forward(family):
    lm = tiny_model(family)
    ids = torch.randint(3, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lm.model(ids).logits
    out = teacher_forced_logits(lm, ids[:, :25], ids[:, 25:])
    torch.testing.assert_close(out, ref[:, 24:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_hf_generate(family):
    lm = tiny_model(family)
    ids = torch.randint(3, 97, (1, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = lm.model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    out = tokens(generate(lm, ids, max_new_tokens=40))
    assert out == ref[0, 17:].tolist()
    assert len(out) == 40


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_left_padded_batch_gives_each_prompt_its_own_result(family):
    lm = tiny_model(family)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 97, (n,), generator=gen) for n in (9, 23, 15)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = p, 1
    batch = list(generate(lm, ids, mask, max_new_tokens=24))
    for row, p in enumerate(prompts):
        single = list(generate(lm, p[None], max_new_tokens=24))
        assert tokens(batch, row) == tokens(single)
        # pads are never counted as held tokens
        assert batch[0].kept_tokens_per_row[row] == [len(p)] * 4
        assert batch[-1].kept_tokens_per_row[row] == [len(p) + 23] * 4


def test_sliding_window_matches_hf():
    """Mistral-style sliding windows: the position mask must drop keys that fall out of the window."""
    lm = tiny_model("mistral", sliding_window=8)
    ids = torch.randint(3, 97, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = lm.model(ids).logits
    out = teacher_forced_logits(lm, ids[:, :20], ids[:, 20:])
    torch.testing.assert_close(out, ref[:, 19:], atol=1e-4, rtol=1e-4)


def test_seeded_sampling_repeats_and_differs_across_seeds():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (2, 12), generator=torch.Generator().manual_seed(5))

    def run(seed):
        return [r.token_ids for r in generate(lm, ids, max_new_tokens=32,
                                              sampling=Sampling(temperature=1.0, top_p=0.9, seed=seed))]

    assert run(7) == run(7)
    # 64 sampled tokens from a near-flat distribution: two seeds agreeing everywhere has odds < 1e-20
    assert run(7) != run(8)


def test_top_p_keeps_only_the_nucleus():
    from pyramid_core.sampling import sample

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, Sampling(temperature=1.0, top_p=0.7), gen)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 < 0.7, so the token that crosses p (index 1) is kept; 2 and 3 never


def test_eos_stops_a_row_and_pads_after_it():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 10), generator=torch.Generator().manual_seed(6))
    free = tokens(generate(lm, ids, max_new_tokens=12))
    eos = free[3]
    stopped = tokens(generate(lm, ids, max_new_tokens=12, eos_token_id=eos))
    assert stopped == free[: free.index(eos) + 1]


def test_records_count_kv_bytes_held():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 70), generator=torch.Generator().manual_seed(7))
    records = list(generate(lm, ids, max_new_tokens=5))
    cfg = lm.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_slot = 2 * cfg.num_key_value_heads * head_dim * 4  # K and V, fp32
    # 70 prompt tokens take five 16-slot blocks in each of the 4 layers
    assert records[0].kv_bytes == cfg.num_hidden_layers * 80 * per_slot
    assert records[0].kept_tokens == [70] * 4 and records[-1].kept_tokens == [74] * 4
    assert records[-1].peak_kv_bytes >= records[-1].kv_bytes


@pytest.mark.parametrize("bad, message", [
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "empty"),
    (dict(input_ids=torch.ones(1, 600, dtype=torch.long)), "more than the model's context"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(attention_mask=torch.tensor([[1, 0, 1]]), input_ids=torch.tensor([[5, 6, 7]])), "left-padded"),
])
def test_bad_requests_raise_clear_errors(bad, message):
    lm = tiny_model("llama")
    args = dict(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=4) | bad
    with pytest.raises(ValueError, match=message):
        list(generate(lm, **args))


@pytest.mark.parametrize("knob, value", [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5)])
def test_sampling_knobs_are_validated(knob, value):
    with pytest.raises(ValueError, match=knob):
        Sampling(**{knob: value})


def test_stop_event_ends_generation():
    import threading

    lm = tiny_model("llama")
    stop = threading.Event()
    records = []
    for record in generate(lm, torch.tensor([[5, 6, 7]]), max_new_tokens=50, stop=stop):
        records.append(record)
        if len(records) == 3:
            stop.set()
    assert len(records) == 4  # the step after the stop is the last


def test_the_last_step_carries_its_detail_whatever_was_asked():
    """Issue 18: a live view records detail on the steps it draws; after a run its figures showed an
    older step (e.g. step 44 of 64). With detail_last the last record has attention and positions,
    whether the run ended by max_new_tokens, at EOS or by stop."""
    import threading

    lm = tiny_model("llama")
    prompt = torch.tensor([[5, 6, 7, 8]])
    never = dict(record_attention=False, record_positions=lambda step: False, detail_last=True)
    by_length = list(generate(lm, prompt, max_new_tokens=5, **never))
    free = [r.token_ids[0] for r in by_length]
    by_eos = list(generate(lm, prompt, max_new_tokens=5, eos_token_id=free[2], **never))
    stop = threading.Event()
    by_stop = []
    for record in generate(lm, prompt, max_new_tokens=50, stop=stop, **never):
        by_stop.append(record)
        stop.set()
    for run, steps in ((by_length, 5), (by_eos, 3), (by_stop, 2)):
        assert len(run) == steps
        assert run[-1].attention is not None and run[-1].kept_positions is not None
        assert all(r.attention is None for r in run[:-1])
        assert all(r.kept_positions is None for r in run[1:-1])
        assert run[-1].kept_positions[0] == list(range(run[-1].seen_tokens))


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("mode, knobs", [("baseline", {}), ("pyramid", {"min_context_length": 8, "prefill_decay_ratio": 0.5}),
                                         ("streaming", {"kv_budget": 0.5}), ("h2o", {"kv_budget": 0.5}),
                                         ("recurformer", {})])
def test_a_last_step_made_in_detail_afterwards_matches_one_asked_for(mode, knobs, graphs, monkeypatch, tmp_path):
    """detail_last makes the last step's attention after the step, once it is known to be the last; it is
    the attention an asked-for record of that step has, also for policies that evict or window in the step
    and for layers whose groups are partly recurrences. The steps before it compute none (but PyramidInfer's
    cutting layers, whose slots move)."""
    from pyramid_core import engine
    from pyramid_core.policies.registry import make_policy
    from tests.test_recurformer_engine import make_adapter

    lm, prompt = tiny_model("llama"), torch.randint(3, 97, (1, 40), generator=torch.Generator().manual_seed(3))
    if mode == "recurformer":
        knobs = {"adapter": make_adapter(lm, tmp_path, [[1, 0], [3, 1]])}
    made = []
    monkeypatch.setattr(engine, "attention_record", lambda *a, _f=engine.attention_record: made.append(a[0]) or _f(*a))
    for n in (2, 9, 23):
        def run(**kw):
            return list(generate(lm, prompt, policy=make_policy(mode, knobs), max_new_tokens=n,
                                 cuda_graphs=graphs, **kw))
        asked = run(record_attention=True)
        made.clear()
        deferred = run(record_attention=False, detail_last=True)
        assert deferred[-1].attention == asked[-1].attention and deferred[-1].attention
        assert [r.token_ids for r in deferred] == [r.token_ids for r in asked]
        layers = lm.config.num_hidden_layers
        if mode == "pyramid":  # also the layers it cuts in a step (a cut moves the slots), not all n steps'
            assert n == 2 or len(made) < layers * n
        else:  # an eviction or a ring window only marks slots free: the prefill's records and the last step's
            assert len(made) == layers * 2


def test_a_last_step_made_in_detail_afterwards_keeps_its_own_queries(monkeypatch):
    """On graphs, a layer's q is the graph's buffer: between a step and the record made after it (once the step
    is known to be the last), another request may take the graphs and replay them. Forced here: while request A
    samples its last step, request B (another prompt, same batch size) runs a decode step on the same graphs."""
    from pyramid_core import engine

    lm = tiny_model("llama")
    a_ids, b_ids = (torch.randint(3, 97, (1, 30), generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    alone = list(generate(lm, a_ids, max_new_tokens=6, record_attention=True, cuda_graphs=True))
    other = generate(lm, b_ids, max_new_tokens=20, cuda_graphs=True)
    next(other), next(other)  # B's prefill and a first decode step: it holds graphs of batch 1 too
    sample, in_b = engine.sample, []

    def sample_then_let_b_step(*args):
        out = sample(*args)
        if not in_b:  # A's step is over and the graphs are free: B replays every layer's graphs
            in_b.append(True)
            next(other)
            in_b.clear()
        return out

    monkeypatch.setattr(engine, "sample", sample_then_let_b_step)
    deferred = list(generate(lm, a_ids, max_new_tokens=6, detail_last=True, cuda_graphs=True))
    assert deferred[-1].attention == alone[-1].attention


def test_attention_is_recorded_on_the_steps_asked_for():
    lm = tiny_model("llama")
    records = list(generate(lm, torch.tensor([[5, 6, 7, 8]]), max_new_tokens=6,
                            record_attention=lambda step: step % 2 == 0))
    assert [r.attention is not None for r in records] == [True, False, True, False, True, False]
    prefill = records[0].attention
    assert len(prefill) == 4 and prefill[0].positions == [0, 1, 2, 3]
    for head in records[2].attention[1].weights:  # a decode row over 6 held tokens sums to 1
        assert len(head) == 6 and abs(sum(head) - 1) < 1e-5
