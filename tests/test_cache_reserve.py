"""The KV reserve (cache.py, the engine's reserve_kv): each layer's buffers sized once after its prefill
and never reallocated, with the same tokens and the same held positions as the growing layout.

Issue 19: at Table 1's setup the largest batch was bounded by the caching allocator's fragmentation
(buffers reallocated as they grow and at every compaction), not by the KV itself."""

import pytest
import torch

from pyramid_core.cache import LayerCache
from pyramid_core.engine import generate, start_request, step
from pyramid_core.policies.full import FullPolicy
from pyramid_core.policies.h2o import H2OPolicy
from pyramid_core.policies.pyramid import PyramidPolicy
from pyramid_core.policies.streaming import StreamingPolicy
from tests.test_streaming_ring import prompts
from tests.tiny_models import tiny_model

NEW = 40
LENGTHS = [90, 57]  # batch 2, different lengths: rows with holes, so compaction takes its general path


class SpyPyramid(PyramidPolicy):
    """PyramidInfer that counts its decode-time Keeps, so a test knows a compaction really happened."""

    def decode(self, ctx):
        answer = super().decode(ctx)
        self.decode_keeps = getattr(self, "decode_keeps", 0) + (answer is not None)
        return answer


MODES = {  # small windows and chunks, so the tiny prompts are cut at the prefill and during decoding
    "baseline": lambda: FullPolicy(),
    "pyramid": lambda: SpyPyramid(min_context_length=16, chunk_length=8),
    "streaming": lambda: StreamingPolicy(sink_len=4, kv_budget=0.4),
    "h2o": lambda: H2OPolicy(kv_budget=0.3, recent_share=0.5),
}


def greedy(lm, policy, ids, mask, reserve: bool):
    """NEW greedy steps through start_request/step. Per step: the tokens, every row's held positions per
    layer, and every layer's (keys, values, positions) data_ptr; also the request."""
    req = start_request(lm, ids, mask, policy, NEW if reserve else None)
    tokens, held, ptrs = [], [], []
    with torch.inference_mode():
        t = ids
        for _ in range(NEW):
            t = step(req, t)[0].argmax(-1)
            tokens.append(t.tolist())
            held.append([req.cache.positions_of_row(row) for row in range(ids.shape[0])])
            ptrs.append([(layer.keys.data_ptr(), layer.values.data_ptr(), layer.positions.data_ptr())
                         for layer in req.cache.layers])
    return tokens, held, ptrs, req


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", layers=4)


@pytest.mark.parametrize("mode", list(MODES))
def test_reserved_buffers_are_never_reallocated(lm, mode):
    """From the prefill's end to the last decode step, every layer keeps its buffers. Without the
    reserve the same run reallocates (growth by blocks, or compaction), except H2O, which evicts in
    place at a fixed length anyway: so the test exercises what the reserve removes."""
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    policy = MODES[mode]()
    _, _, ptrs, req = greedy(lm, policy, ids, mask, reserve=True)
    assert all(p == ptrs[0] for p in ptrs[1:])
    assert all(layer.reserved for layer in req.cache.layers)
    if mode == "pyramid":
        assert policy.decode_keeps > 0, "no decode-time compaction happened: the test would prove nothing"
    _, _, ptrs_off, _ = greedy(lm, MODES[mode](), ids, mask, reserve=False)
    assert (mode == "h2o") == all(p == ptrs_off[0] for p in ptrs_off[1:])


@pytest.mark.parametrize("mode", list(MODES))
def test_reserve_changes_neither_tokens_nor_held_positions(lm, mode):
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    tokens_on, held_on, _, _ = greedy(lm, MODES[mode](), ids, mask, reserve=True)
    tokens_off, held_off, _, _ = greedy(lm, MODES[mode](), ids, mask, reserve=False)
    assert tokens_on == tokens_off
    assert held_on == held_off


@pytest.mark.parametrize("mode", list(MODES))
def test_capacity_is_the_prefill_slots_plus_the_new_tokens(lm, mode):
    """Each layer reserves the slots its prefill left (after the policy's cut, read from a request
    without the reserve) plus NEW, rounded up to the block; PyramidInfer plans fewer slots for the new
    tokens (its decode-time cuts keep every layer below its prefill's tokens plus NEW)."""
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    plain = start_request(lm, ids, mask, MODES[mode]())
    reserved = start_request(lm, ids, mask, MODES[mode](), NEW)
    with torch.inference_mode():
        step(plain, ids)
        step(reserved, ids)
    block = reserved.cache[0].block
    growth = [NEW] * 4 if mode != "pyramid" else MODES[mode]().planned_growth(LENGTHS, NEW, 4)
    expected = [-(-(layer.length + g) // block) * block for layer, g in zip(plain.cache.layers, growth)]
    assert [layer.capacity for layer in reserved.cache.layers] == expected
    if mode == "pyramid":
        assert max(growth) < NEW - 1


def test_a_layer_without_kv_groups_does_not_outgrow_pyramids_reserve(lm, tmp_path):
    """pyramid+recurformer with every KV group of layer 1 a recurrence: the policy is never asked there, so
    that layer is never cut and counts every new token, past the reserve PyramidInfer plans for its cut
    layers (it held no keys, but its slot count refused the step: the embedded model's layers 1 and 10)."""
    from pyramid_core.policies.recurformer import PyramidRecurFormerPolicy
    from tests.test_recurformer_engine import make_adapter

    adapter = make_adapter(lm, tmp_path, [[1, 0], [1, 1]])
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)

    def policy():
        return PyramidRecurFormerPolicy(adapter=adapter, min_context_length=16, chunk_length=8)

    assert max(policy().planned_growth(LENGTHS, NEW, 4)) < NEW - 1  # the cut layers' plan: under NEW
    tokens_on, held_on, ptrs, req = greedy(lm, policy(), ids, mask, reserve=True)
    assert req.cache[1].keys.shape[1] == 0 and req.cache[1].length >= max(LENGTHS) + NEW - 1
    assert all(p == ptrs[0] for p in ptrs[1:])
    tokens_off, held_off, _, _ = greedy(lm, policy(), ids, mask, reserve=False)
    assert (tokens_on, held_on) == (tokens_off, held_off)


@pytest.mark.parametrize("lengths", [LENGTHS, [120, 120], [40, 120, 77]])
def test_pyramid_reserve_is_its_planned_peak(lm, lengths, monkeypatch):
    """PyramidInfer's reserve is what its layers really reach: each layer's growth after the prefill, at
    its highest, is the plan's, so no layer outgrows its reserve (which would refuse) and none holds a
    block it never uses. The highest is right after a step's append: the layer's cut in the same step
    lowers it again, so lengths read between steps would miss it (Table 1 hit that by one slot)."""
    top = {}
    append = LayerCache.append

    def spy(layer, *args):
        append(layer, *args)
        top[id(layer)] = max(top.get(id(layer), 0), layer.length)

    monkeypatch.setattr(LayerCache, "append", spy)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    policy = MODES["pyramid"]()
    req = start_request(lm, ids, mask, policy, NEW)
    with torch.inference_mode():
        t = step(req, ids)[0].argmax(-1)
        after_prefill = [layer.length for layer in req.cache.layers]
        for _ in range(NEW - 1):
            t = step(req, t)[0].argmax(-1)
    grown = [top[id(layer)] - n for layer, n in zip(req.cache.layers, after_prefill)]
    assert grown == policy.planned_growth(lengths, NEW, len(req.cache))


def test_generate_reserve_kv_same_tokens_flat_kv_bytes(lm):
    """generate(reserve_kv=True): the greedy tokens of the default; kv_bytes flat from the prefill on."""
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    runs = {on: list(generate(lm, ids, mask, SpyPyramid(min_context_length=16, chunk_length=8), max_new_tokens=NEW,
                              cuda_graphs=False, reserve_kv=on)) for on in (False, True)}
    assert [r.token_ids for r in runs[True]] == [r.token_ids for r in runs[False]]
    assert len({r.kv_bytes for r in runs[True]}) == 1
    assert len({r.kv_bytes for r in runs[False]}) > 1


def test_a_step_past_the_reserve_is_refused(lm):
    """The reserve is a contract: a token beyond it fails loudly instead of reallocating in silence."""
    ids, mask = prompts([8], lm.config.vocab_size)
    req = start_request(lm, ids, mask, FullPolicy(), 1)
    with torch.inference_mode():
        step(req, ids)
        slack = req.cache[0].capacity - req.cache[0].length
        for _ in range(slack):
            step(req, torch.tensor([5]))
        with pytest.raises(AssertionError, match="reserve"):
            step(req, torch.tensor([5]))


def test_table1_reserve_kv_reaches_every_engine_row_and_no_hf_row(monkeypatch):
    """`bench table1 --reserve-kv`: the flag parses, engine rows run with reserve_kv and a label of their
    own, hf-generate rows run as always (transformers' generate has its own cache)."""
    import argparse

    from pyramid_core.bench import harness, suites
    from pyramid_core.cli.bench import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["table1", "--reserve-kv"]).reserve_kv
    assert not parser.parse_args(["table1"]).reserve_kv
    calls = []
    monkeypatch.setattr(harness, "run_engine", lambda lm, policy, label, *a, **k: calls.append((label, k)))
    monkeypatch.setattr(harness, "run_hf", lambda *a, **k: calls.append(("hf-generate", k)))
    for name in ["hf-generate", *suites.TABLE1_METHODS, "pyramid-45" + suites.EAGER]:
        suites.method_runner(name, reserve_kv=True)(_FakeLM, 2)
    assert calls[0] == ("hf-generate", {})
    assert all(label.endswith(suites.RESERVE) and k["reserve_kv"] for label, k in calls[1:])
    assert len(calls) == len(suites.TABLE1_METHODS) + 2


class _FakeLM:
    """What a TABLE1_METHODS factory reads from a model: its layer count."""

    class config:
        num_hidden_layers = 40


@pytest.mark.parametrize("mode", list(MODES))
def test_each_layer_is_allocated_at_most_twice(lm, mode, monkeypatch):
    """Under a reserve the prefill's first write takes the whole reserve, and a prefill cut that moves
    slots takes it again for what it kept: a layer the policy does not cut (every baseline layer) is
    allocated once for the request, any other at most twice. Without the reserve the baseline's layers
    grow by blocks, more than once each (the reallocations that left Table 1's allocator fragmented)."""
    from pyramid_core.cache import LayerCache

    allocations = []
    real = LayerCache._reallocate
    monkeypatch.setattr(LayerCache, "_reallocate",
                        lambda self, needed, fill=None: (allocations.append(id(self)), real(self, needed, fill)))
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    _, _, _, req = greedy(lm, MODES[mode](), ids, mask, reserve=True)
    per_layer = [allocations.count(id(layer)) for layer in req.cache.layers]
    assert all(1 <= n <= 2 for n in per_layer), per_layer
    if mode == "baseline":
        assert per_layer == [1] * len(per_layer)
        allocations.clear()
        _, _, _, plain = greedy(lm, MODES[mode](), ids, mask, reserve=False)
        assert all(allocations.count(id(layer)) > 1 for layer in plain.cache.layers)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_policy_that_keeps_the_prompt_is_sized_before_the_prefill(lm, mode):
    """Under a reserve the baseline's layers hold their whole reserve (prompt slots + NEW, rounded to the
    block) before the prefill runs, so none is allocated between the prefill's activations; a policy
    that cuts at the prefill cannot know its sizes yet and starts empty. Without a reserve nothing is
    allocated up front."""
    ids, mask = prompts(LENGTHS, lm.config.vocab_size)
    for _ in range(8):  # freed NaNs of the buffers' size, which the allocator hands out again
        torch.full((2, 2, 160, 16), float("nan"))
    req = start_request(lm, ids, mask, MODES[mode](), NEW)
    block = req.cache[0].block
    up_front = -(-(ids.shape[1] + NEW) // block) * block if mode == "baseline" else 0
    assert [layer.capacity for layer in req.cache.layers] == [up_front] * len(req.cache.layers)
    # zeroed, not uninitialised: the step graph's attention reads the unwritten slots with weight 0
    assert all((layer.keys == 0).all() and (layer.values == 0).all() for layer in req.cache.layers)
    assert all(layer.capacity == 0 for layer in start_request(lm, ids, mask, MODES[mode]()).cache.layers)


def test_the_cli_reserves_the_kv_when_asked(checkpoint, monkeypatch, capsys):
    """`generate --reserve-kv` reaches the engine (each layer sized at the prefill for the whole request) and
    changes no token; without the flag the engine grows its buffers."""
    import json

    from pyramid_core import pipeline
    from pyramid_core.cli import main

    asked, engine_generate = [], pipeline.generate

    def spy(*args, **kwargs):
        asked.append(kwargs.get("reserve_kv", False))
        return engine_generate(*args, **kwargs)

    monkeypatch.setattr(pipeline, "generate", spy)
    outs = []
    for flags in ([], ["--reserve-kv"]):
        assert main(["generate", "--model", str(checkpoint), "--prompt", "the cat sat on the mat", "--json",
                     "--max-new-tokens", "12", *flags]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert asked == [False, True]
    assert outs[0]["token_ids"] == outs[1]["token_ids"]
