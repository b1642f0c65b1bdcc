"""PyramidInfer's leaner decode step (issue 19) against the implementation it replaced: the same kept
positions in every layer, row and step, and the same logits.

The reference is the previous decode, with one change that the Keep contract makes equivalent: it scores
every column (older tokens ALWAYS) rather than the newest n, so the cache carries it out by its general
top-k and compaction, not by the in-place tail move and the lazily read context that the new path uses.
"""

import pytest
import torch

from pyramid_core.policies.base import ALWAYS, Keep
from pyramid_core.policies.pyramid import PyramidPolicy
from pyramid_core.transfer import to_device
from tests.test_streaming_ring import prompts, run
from tests.tiny_models import tiny_model


class ReferencePyramid(PyramidPolicy):
    """The decode of commit 9acba6d, answering over every column."""

    def decode(self, ctx):
        state = ctx.state
        width = self.window(max(ctx.seen))
        state.voters[ctx.layer].append(ctx.queries, ctx.query_positions, width)
        windows = [self.window(n) for n in ctx.seen]
        markers = state.markers[ctx.layer]
        cuts = [self.chunk_cut(ctx.layer, ctx.num_layers, held, w, m)
                for held, w, m in zip(ctx.counts, windows, markers)]
        if all(cut is None for cut in cuts):
            return None
        sizes, kept = [c[0] if c else 0 for c in cuts], [c[1] if c else 0 for c in cuts]
        T = ctx.positions.shape[1]
        age = torch.arange(T - 1, -1, -1)[None, :]  # 0: a row's newest token
        start, size = torch.tensor(windows)[:, None], torch.tensor(sizes)[:, None]
        chunk = to_device((age >= start) & (age < start + size), ctx.positions.device)
        voters, voter_pos = state.voters[ctx.layer].view(width)
        scores = ctx.attention_scores(voters[:, :, -max(windows):], voter_pos[:, -max(windows):],
                                      self.voter_weights(windows, ctx.keys.device))
        for row, cut in enumerate(cuts):
            if cut is not None:
                markers[row] = ctx.counts[row] - sizes[row] + kept[row] - windows[row]
        return Keep(scores.masked_fill(~chunk, ALWAYS), [held - size + k for held, size, k in
                                                         zip(ctx.counts, sizes, kept)])


# (prompt lengths, knobs), batch 3: equal rows (the in-place tail move); left-padded unequal rows (holes,
# the general compaction); prompts shorter than min_context_length (no prefill cut) and longer; short
# chunks so that each run cuts several times; a wide window and a narrow one; sinks at the chunk's edge
CASES = [
    ([70, 70, 70], dict(chunk_length=4, min_context_length=16)),
    ([61, 17, 4], dict(chunk_length=3, min_context_length=8)),
    ([12, 12, 12], dict(chunk_length=2, min_context_length=64)),
    ([90, 40, 90], dict(chunk_length=5, recent_ratio=0.1, min_context_length=4, gen_compress_ratio=0.4)),
    ([33, 33, 8], dict(chunk_length=4, recent_ratio=0.5, sink_len=9, prefill_decay_strategy="linear")),
]


@pytest.mark.parametrize("lengths,knobs", CASES, ids=[str(c[0]) for c in CASES])
def test_lean_decode_keeps_what_the_previous_decode_kept(lengths, knobs):
    lm = tiny_model("llama", layers=3)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    new_logits, new_kept, _ = run(lm, PyramidPolicy(**knobs), ids, mask, 40)
    ref_logits, ref_kept, _ = run(lm, ReferencePyramid(**knobs), ids, mask, 40)
    assert new_kept == ref_kept
    torch.testing.assert_close(new_logits, ref_logits, rtol=1e-4, atol=1e-4)
    # the case means something only if decode steps cut: some held set lost a position
    cuts = sum(any(not prev[r][l] <= cur[r][l] for r in range(3) for l in range(3))
               for prev, cur in zip(new_kept[1:], new_kept[2:]))
    assert cuts >= 2


@pytest.mark.parametrize("lengths,knobs", CASES[:2], ids=[str(c[0]) for c in CASES[:2]])
def test_the_voters_ring_read_as_it_lies_keeps_what_their_window_in_order_keeps(lengths, knobs, monkeypatch):
    """A planned generation's voters are a ring exactly as wide as its widest window, so the window soon
    wraps around the ring's end: the decode reads the ring as it lies, each voter's weight at its slot;
    the previous decode read the window copied out in order. The same kept positions and logits."""
    from pyramid_core.policies.recent_queries import RecentQueries

    wrapped, advance = [], RecentQueries.advance
    monkeypatch.setattr(RecentQueries, "advance", lambda self, *a: (advance(self, *a), wrapped.append(self.slot == 0)))
    lm = tiny_model("llama", layers=3)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    new_logits, new_kept, _ = run(lm, PyramidPolicy(**knobs), ids, mask, 40, reserve=41)
    assert any(wrapped)
    ref_logits, ref_kept, _ = run(lm, ReferencePyramid(**knobs), ids, mask, 40, reserve=41)
    assert new_kept == ref_kept
    torch.testing.assert_close(new_logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_a_step_without_a_cut_reads_nothing_of_the_layer():
    """A step that answers None from host counts does not read the layer's keys or positions."""
    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([50, 50], lm.config.vocab_size)
    read = []

    class Spy(PyramidPolicy):
        def decode(self, ctx):
            answer = super().decode(ctx)
            read.append((answer is not None, "_held" in ctx.__dict__))
            return answer

    run(lm, Spy(chunk_length=4, min_context_length=8), ids, mask, 30)
    assert {cut for cut, _ in read} == {False, True}
    assert all(cut == was_read for cut, was_read in read)
