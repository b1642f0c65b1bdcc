"""PyramidInfer and the streaming baseline: counts, choices, positions and the decode regression; every
registered policy: padding and batch against single runs."""

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from pyramid_core import generate
from pyramid_core.engine import teacher_forced_logits
from pyramid_core.policies import ALL_POLICIES, PyramidPolicy, StreamingPolicy
from pyramid_core.policies.registry import make_policy
from pyramid_core.policies.voter_rows import VoterRows
from tests.tiny_models import tiny_model

LAYERS = 8


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=LAYERS, max_position_embeddings=1024)


def prompt(n, seed=0):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def expected_counts(n, layers, d, schedule, interval, min_ctx, recent=0.2):
    """The paper's schedule, written out here on its own: what each layer caches after prefill."""
    window = min(n, 1 + int(recent * n))
    held, counts = n, []
    for layer in range(layers):
        counts.append(held)
        x = layer / layers
        r = {"cosine": (1 - d) * (math.cos(math.pi * x) + 1) / 2 + d,
             "linear": 1 - (1 - d) * x, "constant": d}[schedule]
        if layer % interval or r >= 1:
            continue
        context, floor = held - window, min(min_ctx, n - window)
        if context > floor and int(context * r) > floor:
            held = int(context * r) + window
    return counts


@pytest.mark.parametrize("n", [40, 97, 250])
@pytest.mark.parametrize("schedule,d,interval,min_ctx", [
    ("cosine", 0.6, 1, 8), ("linear", 0.5, 1, 8), ("constant", 0.7, 2, 8), ("cosine", 0.3, 3, 30),
    ("cosine", 0.5, 1, 64)])
def test_prefill_counts_follow_the_schedule(lm, n, schedule, d, interval, min_ctx):
    policy = PyramidPolicy(prefill_decay_ratio=d, prefill_decay_strategy=schedule, layer_interval=interval,
                           min_context_length=min_ctx)
    first = next(generate(lm, prompt(n), policy=policy, max_new_tokens=1))
    assert first.kept_tokens == expected_counts(n, LAYERS, d, schedule, interval, min_ctx)


def test_min_context_edge_skips_a_layer(lm):
    """A layer whose context would shrink to min_context_length or less is not compressed at all."""
    n = 100  # window 21, context 79 at layer 1
    policy = PyramidPolicy(prefill_decay_ratio=0.0, prefill_decay_strategy="constant", min_context_length=78)
    first = next(generate(lm, prompt(n), policy=policy, max_new_tokens=1))
    assert first.kept_tokens == [n] * LAYERS


def reference_prefill(lm, ids, policy):
    """Brute force: full eager attention matrices, HF's own decoder layers, selection by sorting."""
    base, cfg = lm.model.model, lm.config
    H, H_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    D = cfg.hidden_size // H
    n = ids.shape[1]
    window = 1 + int(policy.recent_ratio * n)
    h, pos = base.embed_tokens(ids), torch.arange(n)[None]
    kept = []
    for idx, layer in enumerate(base.layers):
        kept.append(pos[0].tolist())
        cos, sin = base.rotary_emb(h, pos)
        x = layer.input_layernorm(h)
        q = layer.self_attn.q_proj(x).view(1, -1, H, D).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(1, -1, H_kv, D).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(H // H_kv, dim=1)
        L = h.shape[1]
        logits = q @ k.transpose(-1, -2) / math.sqrt(D)
        attn = torch.softmax(logits.masked_fill(torch.ones(L, L).triu(1).bool(), float("-inf")), -1)
        h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin))
        r = (1 - policy.prefill_decay_ratio) * (math.cos(math.pi * idx / len(base.layers)) + 1) / 2 \
            + policy.prefill_decay_ratio
        context = L - window
        top = int(context * r)
        if r >= 1 or context <= policy.min_context_length or top <= policy.min_context_length:
            continue
        weights = torch.linspace(1.0, policy.distance_weight, window)
        scores = (attn[0].mean(0)[-window:, :context] * weights[:, None]).sum(0)
        scores[: policy.sink_len] = float("inf")
        chosen = sorted(torch.topk(scores, top).indices.tolist()) + list(range(context, L))
        h, pos = h[:, chosen], pos[:, chosen]
    logits = lm.model.lm_head(base.norm(h[:, -1]))
    return kept, logits


def test_kept_positions_and_logits_equal_brute_force(lm):
    policy = PyramidPolicy(prefill_decay_ratio=0.4, min_context_length=8)
    ids = prompt(120, seed=1)
    first = next(generate(lm, ids, policy=policy, max_new_tokens=1))
    with torch.no_grad():
        kept, ref_logits = reference_prefill(lm, ids, policy)
    assert first.kept_positions == kept
    assert len(kept[-1]) < 80  # the test means something only if deep layers really dropped tokens
    # kept tokens keep their original RoPE positions: the reference rotates by original position
    logits = teacher_forced_logits(lm, ids, ids[:, :0], policy=policy)[:, 0]
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    assert any(b - a > 1 for a, b in zip(kept[-1], kept[-1][1:]))  # gaps: positions were not re-indexed


def test_every_ratio_one_is_the_baseline(lm):
    ids = prompt(150, seed=2)
    off = PyramidPolicy(prefill_decay_ratio=1.0, gen_decay_ratio=1.0, gen_compress_ratio=1.0, min_context_length=8)
    base = [r.token_ids for r in generate(lm, ids, max_new_tokens=60)]
    assert [r.token_ids for r in generate(lm, ids, policy=off, max_new_tokens=60)] == base


def test_decode_keeps_prompt_tokens_in_deep_layers(lm):
    """Regression: the official transformers-4.46 port compares the global token count with each
    layer's marker, so every layer with a compressed prefill re-compresses at each step and deep
    layers collapse to the recent window. Per-layer markers keep the prompt's pivotal tokens."""
    policy = PyramidPolicy(prefill_decay_ratio=0.5, min_context_length=16)
    records = list(generate(lm, prompt(400, seed=3), policy=policy, max_new_tokens=200,
                            record_positions=True))
    first, last = records[0], records[-1]
    assert len(records) == 200
    for layer in range(LAYERS):
        assert set(first.kept_positions[layer]) <= set(last.kept_positions[layer])
    window = policy.window(last.seen_tokens)
    assert last.kept_tokens[-1] > window + first.kept_tokens[-1] // 2
    assert last.kept_tokens[-1] < first.kept_tokens[-1] + 199  # ...and decode compression did fire
    for layer_positions in last.kept_positions:
        assert layer_positions[:4] == [0, 1, 2, 3]  # sinks survive prefill and decode


def left_padded(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):], mask[row, width - len(p):] = p, 1
    return ids, mask


ADAPTER = "adapter"  # replaced by the adapter fixture's directory
POLICY_CASES = {
    "baseline": {},
    "pyramid": {"prefill_decay_ratio": 0.5, "min_context_length": 8},
    "streaming": {"kv_budget": 0.4},
    "h2o": {"kv_budget": 0.3, "recent_share": 0.25},
    "snapkv": {"kv_budget": 0.3, "window_size": 8},
    "recurformer": {"adapter": ADAPTER},
    "pyramid+recurformer": {"adapter": ADAPTER, "prefill_decay_ratio": 0.5, "min_context_length": 8},
}


@pytest.fixture(scope="module")
def adapter(lm, tmp_path_factory):
    from tests.test_recurformer_engine import make_adapter

    return make_adapter(lm, tmp_path_factory.mktemp("adapter"), [[2, 0], [6, 1]])


def test_every_policy_has_a_case():
    assert set(POLICY_CASES) == set(ALL_POLICIES)


@pytest.mark.parametrize("mode", sorted(POLICY_CASES))
def test_batch_of_different_lengths_matches_single_runs(lm, adapter, mode):
    prompts = [prompt(n, seed=n)[0] for n in (60, 150, 111)]
    ids, mask = left_padded(prompts)
    knobs = {k: adapter if v == ADAPTER else v for k, v in POLICY_CASES[mode].items()}
    policy = make_policy(mode, knobs)
    batch = list(generate(lm, ids, mask, policy=policy, max_new_tokens=40))
    for row, p in enumerate(prompts):
        single = list(generate(lm, p[None], policy=policy, max_new_tokens=40))
        assert [r.token_ids[row] for r in batch] == [r.token_ids[0] for r in single]
        assert [r.kept_tokens_per_row[row] for r in batch] == [r.kept_tokens for r in single]
        # pads are never kept or counted: no row holds more than it has seen
        assert max(batch[-1].kept_tokens_per_row[row]) <= len(p) + 39


@pytest.mark.parametrize("budget", [0.3, 0.75])
def test_streaming_keeps_sinks_and_the_recent_window(lm, budget):
    policy = StreamingPolicy(kv_budget=budget)
    records = list(generate(lm, prompt(200, seed=5), policy=policy, max_new_tokens=30, record_positions=True))
    for record in (records[0], records[-1]):
        seen = record.seen_tokens
        size = round(budget * seen)
        assert record.kept_tokens == [size] * LAYERS
        assert record.kept_positions[0] == [0, 1, 2, 3] + list(range(seen - size + 4, seen))


@pytest.mark.parametrize("bad", [{"recent_ratio": 1.5}, {"prefill_decay_strategy": "exp"},
                                 {"layer_interval": 0}, {"chunk_length": 2.5}, {"distance_weight": 0}])
def test_bad_knobs_name_the_knob(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PyramidPolicy(**bad)


def test_unknown_knob_or_preset_is_refused():
    with pytest.raises(ValueError, match="no knob"):
        make_policy("baseline", {"recent_ratio": 0.3})
    with pytest.raises(ValueError, match="unknown preset"):
        make_policy("pyramid", preset="paper-1b")


@pytest.mark.parametrize("all_at_once", [False, True], ids=["layer by layer", "one write a step"])
def test_voter_rows_read_each_slot_where_it_has_aged_to(all_at_once):
    """Voter v's row, cast when row 0 had seen c tokens, describes the slot then a-th newest in its column a;
    at a cut d = seen - c steps later that slot is (a + d)-th newest. Each voter's row comes back so shifted,
    0 for slots newer than the voter or past its row, from every slot of a ring that wraps several times and
    grows once (wider rows from then on). A step's row is the mean over heads of exp(logit - lse), written a
    layer at a time (the eager step) or for every layer at once (the step graph)."""
    B, H, L, chunk, first_seen, n = 2, 3, 2, 4, 50, 9
    rows = VoterRows(L, B, size=6, chunk=chunk, voters=3, seen=first_seen)
    cast = {}  # voter -> (seen when cast, its row's width)
    lse = torch.tensor([0.5, -1.0, 2.0])  # each head's log-sum-exp

    def row(voter, width):
        return torch.tensor([1000.0 * voter + a + 1 for a in range(width)])  # + 1: 0 means "not seen"

    def heads_logits(voter, width):  # head h's probabilities: the row x (1 + (h - 1) / 10), whose mean is the row
        probs = torch.stack([row(voter, width) * (1 + (h - 1) / 10) for h in range(H)])
        return (probs.log() + lse[:, None])[None].expand(B, -1, -1)

    for layer in range(L):
        rows.start(layer, torch.stack([row(v, rows.width) for v in range(3)])[None].expand(B, -1, -1), H)
    cast.update({v: (first_seen, rows.width) for v in range(3)})
    ring = {v: v for v in range(3)}  # slot -> the voter it holds
    for t in range(1, 25):
        seen, voter = first_seen + t, 2 + t
        if t == 11:  # the last `size` voters move into a ring of 8; the older ones were overwritten already
            ring = {v % 8: v for v in sorted(ring.values())}
            rows.grow(8)
        ring[voter % rows.size] = voter
        for layer in range(L):
            logits, lse_to = rows.newest_to(layer)
            logits.copy_(heads_logits(voter, rows.width)), lse_to.copy_(lse.expand(B, -1))
        rows.step(seen)
        for layer in range(L):
            if not all_at_once:
                rows.take(layer)
        if all_at_once:
            rows.take_all()
        cast[voter] = (seen, rows.width)
        shifts = rows.shifts(n, seen, torch.device("cpu"))
        for s in range(rows.size):
            held = ring.get(s)
            weights = torch.zeros(B, rows.size)
            weights[:, s] = 1.0
            for layer in range(L):
                got = rows.scores(layer, weights, shifts)
                want = torch.zeros(n)
                if held is not None:
                    at, width = cast[held]
                    for j in range(n):
                        index = (n - 1 - j) - (seen - at)
                        want[j] = 1000.0 * held + index + 1 if 0 <= index < width else 0.0
                torch.testing.assert_close(got, want.expand(B, -1), msg=f"step {t} slot {s} layer {layer}")


def test_a_planned_generation_sizes_the_voters_for_its_widest_window():
    """Under a reserved KV the engine tells the state the request's new tokens; PyramidInfer's prefill sizes
    the voters' ring for the window of the last step (window(prompt + new)), without spare slots, and keeps
    that storage to the last step."""
    from pyramid_core.engine import start_request

    lm = tiny_model("llama")
    policy = PyramidPolicy(min_context_length=8, recent_ratio=0.3)
    ids = torch.randint(3, 90, (2, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    assert [start_request(lm, ids, mask, policy, reserve).state.new_tokens for reserve in (None, 60)] == [None, 60]
    records = generate(lm, ids, mask, policy=policy, max_new_tokens=60, reserve_kv=True)
    next(records)  # the prefill
    state = records.gi_frame.f_locals["req"].state  # the running request's
    voters = state.voters
    storage = [t.data_ptr() for t in voters.rows.values()]
    assert voters.size == policy.window(40 + 60) and voters.width == voters.size + policy.chunk_length
    for _ in records:  # the whole generation in the same ring
        pass
    assert state.voters is voters and [t.data_ptr() for t in voters.rows.values()] == storage
    assert voters.count > voters.size  # it wrapped


def test_compacting_only_the_tail_equals_a_full_compaction():
    """PyramidInfer's decode chunks let the cache move only the slots after the oldest chunk, in place."""
    from pyramid_core.cache import LayerCache

    gen = torch.Generator().manual_seed(0)
    B, H, T, D = 3, 2, 50, 4
    keys, values = torch.randn(B, H, T, D, generator=gen), torch.randn(B, H, T, D, generator=gen)
    positions = torch.arange(T).repeat(B, 1)
    keep = torch.ones(B, T, dtype=torch.bool)
    for row, first in enumerate((12, 20, 31)):  # five slots dropped per row, at different places
        keep[row, first + torch.randperm(10, generator=gen)[:5]] = False
    tail, full = (LayerCache(B, H, D, torch.float32, torch.device("cpu"), block=16) for _ in range(2))
    for cache in (tail, full):
        cache.append(keys, values, positions, [T] * B)
    tail.keep(keep[:, 12:].float(), [T - 12 - 5] * B)  # scores only the slots from 12 on: those move
    full.keep(keep.float(), [T - 5] * B)  # scores every slot: the cache is rebuilt
    for mine, theirs in zip(tail.view(), full.view()):
        assert torch.equal(mine, theirs)
    expected = [[p for p in range(T) if keep[row, p]] for row in range(B)]
    assert tail.view()[2].tolist() == expected
    assert (tail.capacity, full.capacity) == (64, 48)  # moved in place vs reallocated


def test_row_cuts_answer_each_row_as_its_own_chunk_cut():
    """decode() asks row_cuts for a whole batch at once (its keep count worked out once a layer); each row's answer
    is chunk_cut's: (chunk size, tokens kept) once chunk_length tokens have left the window since the marker."""
    policy = PyramidPolicy(chunk_length=8, sink_len=4, gen_compress_ratio=1.0)  # cosine to gen_decay_ratio 0.1
    held, windows, markers = [40, 40, 15, 13], [5, 5, 5, 5], [27, 28, 0, 0]
    # layer 7 of 16 keeps int(8 x (0.9 x (cos(7 pi / 16) + 1) / 2 + 0.1)) = int(5.10) = 5 of a chunk: a full chunk;
    # one token short of the trigger; chunks cut short by the sinks (15 - 4 - 5 = 6 slots; 13 - 4 - 5 = 4, all kept)
    expected = [(8, 5), None, (6, 5), (4, 4)]
    assert policy.row_cuts(7, 16, held, windows, markers) == expected
    assert [policy.chunk_cut(7, 16, h, w, m) for h, w, m in zip(held, windows, markers)] == expected
    assert policy.row_cuts(0, 16, held, windows, markers)[0] == (8, 8)  # layer 0 keeps its whole chunk
