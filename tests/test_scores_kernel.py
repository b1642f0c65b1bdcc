"""The Triton scorer (kernels/scores_triton.py) against its PyTorch twin.

On a GPU the kernels run compiled; on a CPU in Triton's interpreter (conftest.py), so CI checks the same
kernel source. Shapes are awkward on purpose: voters that fill no block (W = 3, 65, 103) or take two (130),
slots past a block edge, grouped heads, empty slots, a voter that does not vote.
"""

import pytest
import torch

from tests.test_scores import make_inputs
from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.scores import recent_attention_scores_torch
from pyramid_core.kernels.scores_triton import recent_attention_scores_triton

CASES = [  # B, H, H_kv, W, T, D
    (1, 4, 4, 3, 20, 64),
    (2, 6, 2, 65, 130, 32),    # GQA; voters just past one block
    (3, 5, 5, 17, 257, 16),    # heads that no power of two holds
    (2, 2, 1, 130, 150, 16),   # more voters than one block holds
]
GPU_CASES = [(2, 32, 8, 103, 500, 128), (3, 40, 40, 17, 1000, 128), (2, 14, 2, 65, 4097, 64)]


@pytest.mark.parametrize("B,H,H_kv,W,T,D", CASES + (GPU_CASES if DEVICE == "cuda" else []), ids=str)
def test_kernel_equals_twin(B, H, H_kv, W, T, D):
    """Every slot, each normalised over every slot its voter sees."""
    q, q_pos, k, k_pos, weights = make_inputs(B, H, H_kv, W, T, D, device=DEVICE, dtype=torch.float16)
    out = recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5)
    ref = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    assert out.shape == ref.shape == (B, T) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-3 * float(weights.sum(1).max()) / T ** 0.5, rtol=2e-2)


def test_each_head_adds_its_own_share():
    """A head whose voters see only one slot puts its whole weight there: the mean over heads is what tells
    one head's share from another's (a program summing the wrong head, or one head twice, moves it)."""
    B, H, W, T, D = 1, 3, 2, 40, 16
    q, q_pos, k, k_pos, weights = make_inputs(B, H, H, W, T, D, device=DEVICE, dtype=torch.float16)
    q[:, 1] = 0  # head 1 attends evenly; heads 0 and 2 sharply to the slot their query copies
    k[:, 0, 5], k[:, 2, 30] = q[:, 0, 0] * 8, q[:, 2, 0] * 8
    q[:, 0, 1], q[:, 2, 1] = q[:, 0, 0], q[:, 2, 0]
    out = recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5)
    ref = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-2)
    assert out[0, 5] > 0.25 * float(weights.sum()) and out[0, 30] > 0.25 * float(weights.sum())


def test_a_block_without_voters_adds_nothing():
    """Queries that do not vote (no position, weight 0: a padded row's) filling a whole block write zeros
    without computing (a kernel that left that block's share unwritten, or computed it with the wrong voters,
    would add to the scores). Voters in the last of two blocks of 128."""
    B, H, W, T, D = 2, 4, 200, 300, 32
    q, q_pos, k, k_pos, weights = make_inputs(B, H, H, W, T, D, device=DEVICE, dtype=torch.float16)
    q_pos[:, :150], weights[:, :150] = -1, 0.0
    out = recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5)
    ref = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    torch.testing.assert_close(out, ref, atol=2e-3 * float(weights.sum(1).max()) / T ** 0.5, rtol=2e-2)
