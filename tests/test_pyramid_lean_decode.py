"""PyramidInfer's decode step (issue 19) against a plain statement of what it computes: the same kept
positions in every layer, row and step, and the same logits.

The reference follows the official code's decode: every voter is the head-averaged attention row it cast
when it was decoded (the prefill's window: when the prompt ran), kept by original position over every slot
it saw, and a cut scores each chunk token by the linearly weighted sum of the newest window's rows at that
token's position. It answers over every column (older tokens ALWAYS), so the cache carries the cut out by
its general top-k and compaction; the engine's decode keeps its rows by age over the newest slots alone,
written by the attention pass (voter_rows.py), and moves the chunk in place.
"""

import pytest
import torch

from pyramid_core.kernels.scores import attention_probs
from pyramid_core.policies.base import ALWAYS, Keep
from pyramid_core.policies.pyramid import PyramidPolicy
from pyramid_core.policies.voter_rows import VoterRows
from pyramid_core.transfer import to_device
from tests.test_streaming_ring import prompts, run
from tests.tiny_models import tiny_model


def rows_by_position(ctx, queries, query_pos):
    """Each query's head-averaged attention over the layer's slots: (positions [B, T], probs [B, W, T])."""
    probs = attention_probs(queries, query_pos, ctx.keys, ctx.positions, ctx.scale).mean(1)
    return ctx.positions.clone(), probs


class ReferencePyramid(PyramidPolicy):
    """Decode cuts scored by the voters' rows as cast, looked up by original position."""

    def prefill(self, ctx):
        width = self.window(max(ctx.seen))
        positions, probs = rows_by_position(ctx, ctx.queries[:, :, -width:], ctx.query_positions[:, -width:])
        ctx.state.reference = getattr(ctx.state, "reference", {})
        ctx.state.reference[ctx.layer] = [(positions, probs[:, w]) for w in range(width)]
        return super().prefill(ctx)

    def decode(self, ctx):
        state = ctx.state
        positions, probs = rows_by_position(ctx, ctx.queries, ctx.query_positions)
        voters = state.reference[ctx.layer]
        voters.append((positions, probs[:, 0]))
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
        scores = torch.zeros(ctx.positions.shape)
        for row, w in enumerate(windows):
            for weight, (cast_at, probs) in zip(torch.linspace(1.0, self.distance_weight, w), voters[-w:]):
                same = (ctx.positions[row][:, None] == cast_at[row][None, :]) & (cast_at[row][None, :] >= 0)
                scores[row] += weight * (same.float() * probs[row][None, :]).sum(1)
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
def test_decode_keeps_what_the_voters_rows_as_cast_keep(lengths, knobs):
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
def test_the_voters_ring_read_as_it_lies_keeps_what_their_rows_as_cast_keep(lengths, knobs, monkeypatch):
    """A planned generation's voters are a ring exactly as wide as its widest window, so the window soon
    wraps around the ring's end: the decode reads the ring as it lies, each voter's weight at its slot and
    its row shifted by the steps since it was cast. The same kept positions and logits as the reference."""
    wrapped, step = [], VoterRows.step
    monkeypatch.setattr(VoterRows, "step", lambda self, seen: wrapped.append(self.count >= self.size) or step(self, seen))
    lm = tiny_model("llama", layers=3)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    new_logits, new_kept, _ = run(lm, PyramidPolicy(**knobs), ids, mask, 40, reserve=41)
    assert any(wrapped)
    ref_logits, ref_kept, _ = run(lm, ReferencePyramid(**knobs), ids, mask, 40, reserve=41)
    assert new_kept == ref_kept
    torch.testing.assert_close(new_logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_no_decode_step_reads_the_layers_keys():
    """A step that answers None from host counts, and a cut too (it scores the voters' rows, which the
    attention pass wrote), reads none of the layer's keys or positions."""
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
    assert not any(was_read for _, was_read in read)


def test_a_window_that_outgrows_its_ring_keeps_what_the_reference_keeps(monkeypatch):
    """An unplanned generation's ring has SLACK spare voters; a window that outgrows them moves the voters into
    a larger ring with wider rows (VoterRows.grow) between steps, and the cuts after it keep what the voters'
    rows as cast keep."""
    grown, grow = [], VoterRows.grow  # row 0's tokens seen when the ring grew
    monkeypatch.setattr(VoterRows, "grow", lambda self, size: grown.append(self.step_seen) or grow(self, size))
    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([30, 24], lm.config.vocab_size)
    knobs = dict(chunk_length=2, recent_ratio=0.5, min_context_length=4, sink_len=2)
    new_logits, new_kept, _ = run(lm, PyramidPolicy(**knobs), ids, mask, 90)
    # the window (half the tokens seen) gains 45 voters in 90 steps, past the ring's 32 spare; and layers cut
    # after it grew (new_kept[i] is after step i; row 0's prompt is 30 tokens)
    assert len(grown) == 1
    after = grown[0] - 30
    ref_logits, ref_kept, _ = run(lm, ReferencePyramid(**knobs), ids, mask, 90)
    assert new_kept == ref_kept
    torch.testing.assert_close(new_logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert any(not prev[r][l] <= cur[r][l] for prev, cur in zip(new_kept[after:], new_kept[after + 1:])
               for r in range(2) for l in range(2))
