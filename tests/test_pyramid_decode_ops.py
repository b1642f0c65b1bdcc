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
from pyramid_core.kernels import head_mean_triton, scores_triton
from pyramid_core.kernels.head_mean import head_mean_torch
from pyramid_core.policies import base, voter_rows
from pyramid_core.policies.pyramid import PyramidPolicy
from tests.test_h2o_step_kernel import DEVICE, SYNC_OPS, FakeLaunch, StepLog, needs_triton
from tests.test_streaming_ring import prompts
from tests.tiny_models import tiny_model

# metadata only on a GPU (no launch); empty* allocate without a launch
VIEWS = {"aten::slice", "aten::select", "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::expand",
         "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::alias", "aten::detach"}
NOT_LAUNCHES = VIEWS | {"aten::empty", "aten::empty_strided", "aten::new_empty", "aten::empty_like"}
LAYERS = 3


def logged_cut_steps(monkeypatch):
    """(ops by (region, op) summed over the cutting layers, cutting layers, steps) of a generation whose
    decode cuts every layer several times; the voters' head mean as on CUDA, its launch faked."""
    log, cuts = StepLog(), Counter()
    monkeypatch.setattr(voter_rows, "head_mean", head_mean_triton.head_mean_triton)
    monkeypatch.setattr(head_mean_triton, "head_mean_kernel",
                        FakeLaunch(log, lambda logits, lse, share, rows, slot, *_: head_mean_torch(logits, lse, share,
                                                                                                   rows, slot)))
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
    """Per cutting layer: the step's row into the voters (one launch, kernels/head_mean.py), the voters' rows
    read where the chunk has aged to (a gather) and weighted (a bmm), the masked_fill of the outside-chunk slots;
    the Keep's in-place tail move (two sorts, an add, three gathers, three copies, a fill). Nothing reads the
    layer's keys: the attention pass wrote the rows. What the layers cutting at one step share is built once
    and not counted here ("host build": the weights and the outside-chunk mask on the host, a copy each; the
    rows' shifts on the device from the voters' ages, a copy and six small kernels)."""
    log, layers, steps = logged_cut_steps(monkeypatch)
    assert steps == 40 and layers >= 3 * LAYERS  # several cutting steps, every layer cutting
    per_layer = lambda region: {op: n / layers for (where, op), n in log.ops.items()
                                if where == region and op not in NOT_LAUNCHES}
    policy, keep, plain = per_layer("cut"), per_layer("cache.apply"), per_layer("plain")
    assert "aten::contiguous" not in policy
    # the head mean, gather, bmm, masked_fill, and once a step the slot's index (a fill): 4 and a share. Scoring
    # the stored queries against the keys took 7 (the queries' positions written, the scorer, the sum of its
    # heads' shares); the key and query copies before that made it 10.25
    assert sum(policy.values()) <= 4 + 1 / LAYERS + 1e-9, policy
    # a plain step: the head mean (and the slot's index once a step), as the write of a query did
    assert sum(plain.values()) * layers / (steps * LAYERS - layers) <= 1 + 1 / LAYERS + 1e-9, plain
    # 10 launches, scores.float() of float scores and a lift_fresh (neither launches); the row index and two
    # index gathers (for the keys, the values) made it 13. On a CPU the slot move is its twin (two gathers,
    # two copies); on a GPU one kernel
    assert sum(keep.values()) <= 12, keep
    assert not {key: n for key, n in log.ops.items() if key[1] in SYNC_OPS and key[0] != "engine"}
    assert not {key: n for key, n in log.reads.items() if key[0] != "engine"}


@needs_triton
def test_the_scorer_reads_strided_views_as_their_copies():
    """The scorer (PyramidInfer's prefill) on the cache's view of its keys (keys[:, :, :T] of a longer buffer) and
    the last queries of a longer run gives exactly what it gives on contiguous copies of them (the GPU, or
    Triton's interpreter on a CPU)."""
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
