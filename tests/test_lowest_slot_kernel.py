"""The evicted slot's pick (kernels/lowest_slot.py): the tie rule on hand-made rows, and the Triton kernel
against its twin on rows with ties across blocks, empty slots, rows of nothing but empty or recent slots
(inf), lengths around the kernel's block and views of wider buffers.

On a CPU the Triton kernel runs in its interpreter (TRITON_INTERPRET=1, conftest.py)."""

import pytest
import torch

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.lowest_slot import lowest_slot, lowest_slot_torch
from pyramid_core.kernels.lowest_slot_triton import BLOCK, lowest_slot_triton

INF = float("inf")


@pytest.mark.parametrize("pick", [lowest_slot_torch, lambda s, p, h: lowest_slot_triton(s.to(DEVICE), p.to(DEVICE), h)],
                         ids=["twin", "kernel"])
def test_the_tie_rule_on_hand_made_rows(pick):
    scores = torch.tensor([[3.0, 1.0, 1.0, 2.0],     # two lowest: the newer position (12) wins
                           [1.0, 1.0, 5.0, 1.0],     # three lowest, the newest first in the row
                           [0.0, 4.0, 0.0, INF],     # the empty slot's 0 would win without the hole rule
                           [INF, INF, INF, INF]])    # all recent: the newest slot of the row
    positions = torch.tensor([[10, 11, 12, 13], [30, 20, 21, 22], [-1, 7, 8, 9], [4, 6, 5, -1]])
    assert pick(scores, positions, True).tolist() == [2, 0, 2, 1]
    # without holes an empty slot's score counts: its -1 then loses only to a real position at that score
    assert pick(scores, positions, False).tolist() == [2, 0, 2, 1]
    only_empty = torch.tensor([[0.5, 0.5]]), torch.tensor([[-1, -1]])
    assert pick(*only_empty, True).tolist() == [0]  # nothing else held: the first slot, as argmax gives


def rows(B: int, T: int, seed: int, holes: bool):
    """Scores with many exact ties (a few levels), some inf (recent slots); positions a shuffled range with
    -1 holes; both as views of wider buffers."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (B, T + 9), generator=gen).float()
    scores[torch.rand(B, T + 9, generator=gen) < 0.1] = INF
    positions = torch.stack([torch.randperm(T + 9, generator=gen) for _ in range(B)])
    if holes:
        positions[torch.rand(B, T + 9, generator=gen) < 0.2] = -1
    return scores[:, :T], positions[:, :T]


@pytest.mark.parametrize("T", [1, 5, BLOCK - 1, BLOCK, BLOCK + 3, 2 * BLOCK + 517])
@pytest.mark.parametrize("holes", [False, True])
def test_kernel_equals_twin(T, holes):
    for seed in range(3):
        scores, positions = rows(3, T, seed + T, holes)
        expected = lowest_slot_torch(scores, positions, holes)
        got = lowest_slot_triton(scores.to(DEVICE), positions.to(DEVICE), holes)
        assert got.cpu().tolist() == expected.tolist()


def test_a_tie_across_blocks_goes_to_the_newest_then_the_first():
    T = 2 * BLOCK + 10
    scores = torch.full((1, T), 2.0)
    positions = torch.arange(T)[None].clone()
    scores[0, [5, BLOCK + 7, 2 * BLOCK + 1]] = 1.0
    positions[0, [5, BLOCK + 7, 2 * BLOCK + 1]] = torch.tensor([50_000, 40_000, 50_000])
    assert lowest_slot_triton(scores.to(DEVICE), positions.to(DEVICE), False).tolist() == [5]
    assert lowest_slot_torch(scores, positions, False).tolist() == [5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_dispatcher_writes_into_the_given_slot_buffer(dtype):
    scores, positions = rows(2, 300, 1, True)
    scores = scores.to(dtype)
    out = torch.full((2,), -7, dtype=torch.long, device=DEVICE)
    got = lowest_slot(scores.to(DEVICE), positions.to(DEVICE), True, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert out.cpu().tolist() == lowest_slot_torch(scores, positions, True).tolist()
