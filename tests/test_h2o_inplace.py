"""H2O's in-place decode (an Evict: each row's lowest-scoring slot takes the next token) against the
compacting implementation it replaced: the same kept positions in every layer and row at every step, and
the same logits."""

import pytest
import torch

from pyramid_core.engine import start_request, step
from pyramid_core.policies.base import Evict
from pyramid_core.policies.h2o import H2OPolicy
from tests.test_streaming_ring import assert_decodes_as, one_layer_after_ten_steps, prompts
from tests.tiny_models import tiny_model


class CompactingH2O(H2OPolicy):
    """The previous decode: position-indexed scores every step, carried out by the cache's top-k and
    compaction of the whole layer."""

    def decode(self, ctx):
        voters = torch.ones(ctx.queries.shape[0], 1, device=ctx.queries.device)
        self.accumulate(ctx, ctx.attention_scores(ctx.queries, ctx.query_positions, voters))
        return self.evict(ctx)


# (prompt lengths, kv_budget, recent_share), batch 3: odd heavy and recent sizes; a budget of the whole
# prompt (nothing cut at the prefill); one-token prompts (budget 1, no recent window); a prompt much
# longer than its budget; left-padded rows of unequal lengths, hence unequal budgets and holes
CASES = [([37, 37, 37], 0.3, 0.5), ([3, 3, 3], 1.0, 0.5), ([1, 1, 1], 0.5, 0.5), ([150, 150, 150], 0.07, 0.43),
         ([61, 17, 4], 0.37, 0.34), ([9, 9, 2], 1.0, 0.7), ([40, 13, 13], 0.5, 1.0)]


@pytest.mark.parametrize("lengths,share,recent", CASES)
def test_in_place_h2o_keeps_what_compaction_kept(lengths, share, recent):
    assert_decodes_as(H2OPolicy(kv_budget=share, recent_share=recent),
                      CompactingH2O(kv_budget=share, recent_share=recent), lengths)


def test_a_decode_step_evicts_in_place_without_sorting(monkeypatch):
    """Once full, every layer answers an Evict and the next token overwrites the freed slot: no sort, no
    reallocation, the layer's length fixed; a record read between steps leaves the freed slot pending."""
    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([50, 21, 50], lm.config.vocab_size)
    answers = []

    class Spy(H2OPolicy):
        def decode(self, ctx):
            answers.append(super().decode(ctx))
            return answers[-1]

    req = start_request(lm, ids, mask, Spy(kv_budget=0.3, recent_share=0.4))
    with torch.inference_mode():
        step(req, ids)
        step(req, torch.full((3,), 5))
        lengths = [layer.length for layer in req.cache.layers]
        monkeypatch.setattr(torch, "sort", lambda *a, **k: pytest.fail("an in-place step sorted"))
        for token in range(6, 26):
            req.cache.positions_of_row(1)  # what a record reads between steps
            step(req, torch.full((3,), token))
    assert all(isinstance(a, Evict) for a in answers)
    assert [layer.length for layer in req.cache.layers] == lengths
    assert all(layer.evicted is not None and not layer.ordered for layer in req.cache.layers)
    assert req.cache.counts_per_row() == [[15, 15], [6, 6], [15, 15]]


def test_a_keep_of_every_slot_after_evictions_follows_the_slots_the_policy_saw():
    """A Keep scored over the columns of a layer out of position order is reordered with the slots."""
    layer = one_layer_after_ten_steps(H2OPolicy(kv_budget=0.4, recent_share=0.25))
    with torch.inference_mode():
        _, _, positions = layer.view()  # the freed slots now hold the last tokens: out of order
        assert not layer.ordered
        target = positions[:, [0, 5, 7]]  # keep these three positions of each row, whatever their slots
        scores = torch.zeros(positions.shape).scatter_(1, torch.tensor([[0, 5, 7]] * 2), 1.0)
        layer.keep(scores, [3, 3])
        _, _, kept = layer.view()
    assert [sorted(row) for row in kept.tolist()] == [sorted(row) for row in target.tolist()]
