"""Regression guard for what PyramidInfer's decode launches per layer (benchmarks/pyramid_decode_ops_cpu.md).

On a GPU a batch-1 step is bound by host launches: the policy's eager kernels between a layer's CUDA graphs
are its cost. This counts the aten ops a warm decode step's policy.decode and Keep dispatch per layer, so a
change that adds kernels, copies, syncs or host reads fails here.
"""

import sys
from collections import Counter

import torch

from pyramid_core import generate
from pyramid_core.cache import LayerCache
from pyramid_core.kernels import scores_triton
from pyramid_core.kernels.scores import recent_attention_scores_torch
from pyramid_core.policies import base
from pyramid_core.policies.pyramid import PyramidPolicy
from tests.test_h2o_step_kernel import DEVICE, SYNC_OPS, FakeLaunch, StepLog, needs_triton
from tests.scorer_standin import scorer_launch
from tests.test_streaming_ring import prompts
from tests.tiny_models import tiny_model

# metadata only on a GPU (no launch); empty* allocate without a launch
VIEWS = {"aten::slice", "aten::select", "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::expand",
         "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::alias", "aten::detach"}
NOT_LAUNCHES = VIEWS | {"aten::empty", "aten::empty_strided", "aten::new_empty", "aten::empty_like"}
LAYERS = 3


def logged_cut_steps(monkeypatch):
    """(ops by (region, op) summed over the cutting layers, cutting layers, steps) of a generation whose
    decode cuts every layer several times."""
    log, cuts = StepLog(), Counter()
    policy = PyramidPolicy(chunk_length=4, min_context_length=16)
    decode, apply, shared = policy.decode, LayerCache.apply, base.PolicyState.shared

    def logged_decode(ctx):  # a cutting layer's ops under "cut", a plain one's under "plain"
        before = Counter(log.ops)
        with log.region("policy.decode"):
            answer = decode(ctx)
        mine = log.ops - before
        log.ops -= mine
        log.ops.update({("cut" if answer is not None else "plain", op) if where == "policy.decode" else (where, op): n
                        for (where, op), n in mine.items()})
        cuts["layers"] += answer is not None
        return answer

    def on_host(state, name, key, build):  # what a state builds once per step: CPU tensors, then one copy
        def built():
            with log.region("host build"):
                return build()
        return shared(state, name, key, built)

    def logged_apply(layer, answer):
        with log.region("cache.apply"):
            return apply(layer, answer)

    monkeypatch.setattr(policy, "decode", logged_decode)
    monkeypatch.setattr(LayerCache, "apply", logged_apply)
    monkeypatch.setattr(base.PolicyState, "shared", on_host)
    # 7B-like where it matters: one query head per KV group; head_dim 16 fits the Triton scorer
    lm = tiny_model("llama", layers=LAYERS, num_key_value_heads=4)
    ids, mask = prompts([70], lm.config.vocab_size)
    records = generate(lm, ids, attention_mask=mask, policy=policy, max_new_tokens=3 + 40, cuda_graphs=True)
    for _ in range(3):  # the prefill; the graphs' capture
        next(records)
    cuts.clear()
    with log:
        sys.setprofile(log.watch)
        try:
            steps = len(list(records))
        finally:
            sys.setprofile(None)
    return log, cuts["layers"], steps


@needs_triton
def test_a_cutting_layer_launches_no_more_than_it_needs(monkeypatch):
    """Per cutting layer: the step's row into the voters (the heads' mean, its write), the voters' rows read
    where the chunk has aged to (a gather) and weighted (a bmm), the masked_fill of the outside-chunk slots;
    the Keep's in-place tail move (two sorts, an add, three gathers, three copies, a fill). Nothing reads the
    layer's keys: the attention pass wrote the rows."""
    log, layers, steps = logged_cut_steps(monkeypatch)
    assert steps == 40 and layers >= 3 * LAYERS  # several cutting steps, every layer cutting
    per_layer = lambda region: {op: n / layers for (where, op), n in log.ops.items()
                                if where == region and op not in NOT_LAUNCHES}
    policy, keep, plain = per_layer("cut"), per_layer("cache.apply"), per_layer("plain")
    assert "aten::contiguous" not in policy
    # mean, copy_, gather, bmm, masked_fill: 5. Scoring the stored queries against the keys took 7 (the
    # queries' positions written, the scorer, the sum of its heads' shares); the key and query copies before
    # that made it 10.25
    assert sum(policy.values()) <= 5, policy
    # a plain step: the row's mean and its write (a query's write into a ring of queries took 1)
    assert sum(plain.values()) * layers / (steps * LAYERS - layers) <= 2, plain
    # 10 launches, scores.float() of float scores and a lift_fresh (neither launches); the row index and two
    # index gathers (for the keys, the values) made it 13. On a CPU the slot move is its twin (two gathers,
    # two copies); on a GPU one kernel
    assert sum(keep.values()) <= 12, keep
    assert not {key: n for key, n in log.ops.items() if key[1] in SYNC_OPS and key[0] != "engine"}
    assert not {key: n for key, n in log.reads.items() if key[0] != "engine"}


@needs_triton
def test_the_scorer_reads_strided_views_as_their_copies():
    """The scorer on the cache's view of its keys (keys[:, :, :T] of a longer buffer) and a window of the
    voters' buffer gives exactly what it gives on contiguous copies of them (the GPU, or Triton's interpreter on a CPU)."""
    from tests.test_scores import make_inputs

    for B, H, H_kv, W, T, D in [(1, 4, 4, 5, 70, 16), (2, 6, 2, 9, 63, 16), (3, 8, 1, 17, 130, 32)]:
        q, q_pos, k, k_pos, weights = make_inputs(B, H, H_kv, W + 3, T + 20, D, device=DEVICE)
        q, k = q[:, :, 2:W + 2], k[:, :, :T]
        q_pos, k_pos, weights = q_pos[:, 2:W + 2].contiguous(), k_pos[:, :T].contiguous(), weights[:, :W].contiguous()
        assert not q.is_contiguous() and not k.is_contiguous()
        strided = scores_triton.recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5)
        copied = scores_triton.recent_attention_scores_triton(q.contiguous(), q_pos, k.contiguous(), k_pos,
                                                              weights, D ** -0.5)
        assert torch.equal(strided, copied)


@needs_triton
def test_the_scorer_scores_the_newest_slots_alone_as_it_scores_them_among_all():
    """last=n (PyramidInfer's decode cut): the kernel's second pass runs over the newest n slots only, each
    still normalised over every slot its voters see, so they score as the same slots of a whole pass do, and as
    the twin's. n across the kernel's key blocks (BT 64), at them, and all of T."""
    from tests.test_scores import make_inputs

    for B, H, H_kv, W, T, D in [(2, 6, 2, 9, 150, 16), (1, 4, 4, 5, 70, 32)]:
        q, q_pos, k, k_pos, weights = make_inputs(B, H, H_kv, W, T, D, device=DEVICE)
        whole = scores_triton.recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5)
        for last in (1, 17, 64, min(81, T), T):
            newest = scores_triton.recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5, last=last)
            assert newest.shape == (B, last)
            torch.testing.assert_close(newest, whole[:, T - last:], atol=1e-6, rtol=1e-5)
            twin = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5, last=last)
            # on a GPU the kernel's float32 dot runs as TF32 (test_scores.py's tolerance); the interpreter's is exact
            tol = 2e-3 * float(weights.sum(1).max()) / T ** 0.5 if DEVICE == "cuda" else 1e-5
            torch.testing.assert_close(newest, twin, atol=tol, rtol=2e-2 if DEVICE == "cuda" else 1e-4)
