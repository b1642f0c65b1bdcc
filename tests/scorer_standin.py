"""A CPU stand-in for scores_triton's launch, for code that runs the scorer's host code as on CUDA without a GPU
(benchmarks/h2o_slot_step_cpu.py)."""

import math

from pyramid_core.kernels.scores import recent_attention_scores_torch


def scorer_launch(q, q_pos, k, k_pos, weights, out, scale, *_, **__):
    """What recent_scores_kernel writes, by the twin: out [B, H, voter blocks, T], whose sum over heads and
    blocks is the scores (here all of it in head 0's first block). The kernel's scale carries log2 e (its
    logits are in base 2)."""
    out.zero_()
    out[:, 0, 0] = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, scale / math.log2(math.e))
