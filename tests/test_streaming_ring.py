"""Streaming as a ring (cache.keep_window) against the compacting implementation it replaced: the same
kept positions in every layer and row at every step, and the same logits."""

import pytest
import torch

from pyramid_core.engine import start_request, step
from pyramid_core.policies.streaming import StreamingPolicy
from tests.tiny_models import tiny_model


class CompactingStreaming(StreamingPolicy):
    """The previous decode: position scores every step, carried out by the cache's top-k and compaction."""

    def decode(self, ctx):
        return self.keep(ctx)


def run(lm, policy, ids, mask, steps, reserve=None):
    """Teacher-forced steps; per step, the logits and each row's kept positions per layer (as sets).
    reserve: the engine's (a planned generation of that many new tokens)."""
    req = start_request(lm, ids, mask, policy, reserve)
    forced = torch.randint(3, lm.config.vocab_size, (ids.shape[0], steps), generator=torch.Generator().manual_seed(1))
    logits, kept = [], []
    with torch.inference_mode():
        for i in range(steps + 1):
            logits.append(step(req, ids if i == 0 else forced[:, i - 1])[0])
            kept.append([[set(p) for p in req.cache.positions_of_row(row)] for row in range(ids.shape[0])])
    return torch.stack(logits, 1), kept, req.cache


def one_layer_after_ten_steps(policy):
    """The cache layer of a one-layer model after two 30-token prompts and ten decode steps under policy."""
    lm = tiny_model("llama", layers=1)
    ids, mask = prompts([30, 30], lm.config.vocab_size)
    req = start_request(lm, ids, mask, policy)
    with torch.inference_mode():
        step(req, ids)
        for token in range(3, 13):
            step(req, torch.full((2,), token))
    return req.cache.layers[0]


def prompts(lengths, vocab):
    """Left-padded random prompts of the given lengths."""
    T = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), T), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, T - n:] = 1
    return ids.masked_fill(mask == 0, 0), mask


# (prompt lengths, sink_len, kv_budget): shorter than the sinks plus one (the window is everything held),
# exactly sinks plus one, much longer; equal lengths run the ring, unequal ones fall back to compaction
CASES = [([3, 3, 3], 4, 0.37), ([5, 5, 5], 4, 0.37), ([61, 61, 61], 3, 0.37), ([40, 40, 40], 0, 0.29),
         ([61, 17, 4], 3, 0.37), ([23, 23, 9], 5, 0.61)]


def assert_decodes_as(policy, reference, lengths, steps=30):
    """policy keeps the same positions as reference at every step of every layer, with the same logits."""
    lm = tiny_model("llama", layers=3)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    logits, kept, _ = run(lm, policy, ids, mask, steps)
    ref_logits, ref_kept, _ = run(lm, reference, ids, mask, steps)
    assert kept == ref_kept
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lengths,sink,share", CASES)
def test_ring_keeps_what_compaction_kept(lengths, sink, share):
    assert_decodes_as(StreamingPolicy(sink_len=sink, kv_budget=share),
                      CompactingStreaming(sink_len=sink, kv_budget=share), lengths)


def test_equal_rows_decode_as_a_ring_without_compaction(monkeypatch):
    """Once full, a step frees one slot and the next token overwrites it: no sort, no reallocation."""
    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([50, 50, 50], lm.config.vocab_size)
    req = start_request(lm, ids, mask, StreamingPolicy(sink_len=3, kv_budget=0.4))
    with torch.inference_mode():
        step(req, ids)
        capacity = [layer.capacity for layer in req.cache.layers]
        monkeypatch.setattr(torch, "sort", lambda *a, **k: pytest.fail("a ring step sorted"))
        for token in range(3, 23):
            step(req, torch.full((3,), token))
    assert all(not layer.ordered and layer.ring is not None for layer in req.cache.layers)
    assert [layer.capacity for layer in req.cache.layers] <= [c + layer.block for c, layer in
                                                              zip(capacity, req.cache.layers)]
    assert [len(layer.ring) for layer in req.cache.layers] == [req.cache.layers[0].counts[0] - 3] * 2


def test_a_scored_keep_after_a_ring_restores_position_order():
    """keep() scores the newest slots, so a ring's out-of-order slots are sorted back first."""
    layer = one_layer_after_ten_steps(StreamingPolicy(sink_len=2, kv_budget=0.3))
    with torch.inference_mode():
        held = sorted(p for p in layer.view()[2][0].tolist() if p >= 0)
        layer.keep(torch.arange(3.0)[None].expand(2, 3), [1, 1])  # keep only the newest of the last three
        positions = layer.view()[2]
    assert layer.ordered and [p for p in positions[0].tolist() if p >= 0] == held[:-3] + [held[-1]]
    assert torch.equal(positions[0], positions[1])


def test_a_quiet_step_answers_each_layer_for_its_own_counts():
    """The quiet step makes one window answer per distinct counts (host time): layers that hold different
    counts still get their own, the same as decode() would give each."""
    policy = StreamingPolicy(sink_len=2, kv_budget=0.5)
    seen = [40, 30]
    counts = [[21, 16], [21, 16], [25, 15], [20, 15], [21, 16]]
    quiet = policy.quiet_step(policy.new_state(len(counts)), counts, seen)
    expected = [(layer, policy.window_answer(held, seen)) for layer, held in enumerate(counts)]
    assert list(quiet.answers) == [(layer, answer) for layer, answer in expected if answer is not None]
    assert {layer for layer, _ in quiet.answers} == {0, 1, 2, 4}  # layer 3 fits its budget: no answer
