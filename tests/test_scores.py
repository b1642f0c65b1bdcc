"""The scoring twin against a brute-force full attention matrix (the Triton kernel against the twin:
test_scores_kernel.py)."""

import pytest
import torch

from pyramid_core.kernels.scores import recent_attention_scores_torch


def brute_force(q, q_pos, k, k_pos, weights, scale):
    """Full softmax attention, one (row, head, voter) at a time, in float64."""
    B, H, W, _ = q.shape
    group = H // k.shape[1]
    out = torch.zeros(B, k.shape[2], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                if weights[b, w] == 0:
                    continue
                seen = (k_pos[b] >= 0) & (k_pos[b] <= q_pos[b, w])
                logits = (k[b, h // group].double() @ q[b, h, w].double()) * scale
                probs = torch.softmax(logits.masked_fill(~seen, float("-inf")), dim=0)
                out[b] += weights[b, w] * probs
    return (out / H).float()


def make_inputs(B, H, H_kv, W, T, D, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, W, D, generator=gen)
    k = torch.randn(B, H_kv, T, D, generator=gen)
    k_pos = torch.arange(T).repeat(B, 1)
    k_pos[0, :5] = -1                      # empty slots in front of row 0 (left padding)
    k_pos[:, 7] = -1 if B > 1 else k_pos[:, 7]
    q_pos = torch.arange(T - W, T).repeat(B, 1)
    weights = torch.rand(B, W, generator=gen)
    weights[-1, 0] = 0.0                   # a slot that does not vote
    cast = lambda t: t.to(device=device, dtype=dtype)
    return cast(q), q_pos.to(device), cast(k), k_pos.to(device), weights.to(device)


@pytest.mark.parametrize("B,H,H_kv,W,T,D", [(1, 4, 4, 3, 20, 8), (2, 6, 2, 9, 63, 16), (3, 8, 1, 17, 130, 32)],
                         ids=lambda v: str(v))
def test_twin_equals_brute_force(B, H, H_kv, W, T, D):
    q, q_pos, k, k_pos, weights = make_inputs(B, H, H_kv, W, T, D)
    out = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    torch.testing.assert_close(out, brute_force(q, q_pos, k, k_pos, weights, D ** -0.5), atol=1e-5, rtol=1e-4)
    assert (out[k_pos < 0] == 0).all()



def test_a_whole_prompt_voting_is_scored_in_blocks_reading_only_the_slots_seen(monkeypatch):
    """Every token of a left-padded prompt votes (H2O's prefill): the queries span several blocks, each block
    reads the slots up to the last one its queries see, and the scores still equal the brute force's."""
    from pyramid_core.kernels import scores

    B, H, H_kv, T, D = 2, 4, 2, 600, 8
    q, _, k, k_pos, _ = make_inputs(B, H, H_kv, T, T, D, seed=4)
    q_pos = k_pos.clone()  # each slot's token is a query at its own position; row 0's padding does not vote
    weights = (q_pos >= 0).float()
    read = []
    probs = scores.attention_probs
    monkeypatch.setattr(scores, "attention_probs", lambda q_, qp, k_, kp, sc: read.append(k_.shape[2]) or probs(q_, qp, k_, kp, sc))
    out = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    torch.testing.assert_close(out, brute_force(q, q_pos, k, k_pos, weights, D ** -0.5), atol=1e-5, rtol=1e-4)
    assert read[0] == scores._QUERY_CHUNK and read[-1] == T and len(set(read)) > 1
