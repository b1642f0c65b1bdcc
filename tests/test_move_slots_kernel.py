"""The in-place slot move (kernels/move_slots.py): the Triton kernel against its twin, and the twin against
slot-by-slot moves.

On a GPU the kernel runs compiled; on a CPU in Triton's interpreter (conftest.py). The cases move slots
whose sources overlap their destinations (a recent window moving down by a few slots), more slots than one
block, views of wider buffers, and grouped KV heads."""

import pytest
import torch

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.move_slots import move_slots_torch
from pyramid_core.kernels.move_slots_triton import move_slots_triton


def cut_index(B, T, start, kept, gen):
    """[B, kept] ascending slots >= start, as a cut picks them: its kept few of a chunk, then a window."""
    rows = [torch.randperm(T - start, generator=gen)[:kept].sort().values + start for _ in range(B)]
    return torch.stack(rows)


def buffers(B, H, T, D, capacity, dtype, gen):
    k = torch.randn(B, H, capacity, D, generator=gen).to(DEVICE, dtype)
    v = torch.randn(B, H, capacity, D, generator=gen).to(DEVICE, dtype)
    return k, v


@pytest.mark.parametrize("B,H,T,D,start,kept", [(2, 3, 40, 16, 10, 25), (3, 2, 150, 64, 37, 90),
                                                (1, 4, 9, 32, 0, 9), (2, 2, 100, 128, 60, 1)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_twin(B, H, T, D, start, kept, dtype):
    gen = torch.Generator().manual_seed(T + kept)
    k, v = buffers(B, H, T, D, T + 7, dtype, gen)
    index = cut_index(B, T, start, kept, gen).to(DEVICE)
    k_ref, v_ref = k.clone(), v.clone()
    move_slots_torch(k_ref[:, :, :T], v_ref[:, :, :T], index, start)
    move_slots_triton(k[:, :, :T], v[:, :, :T], index, start)
    assert torch.equal(k, k_ref) and torch.equal(v, v_ref)


def test_twin_moves_slot_by_slot():
    """Each kept slot lands at start + j with its own key and value; slots before start and the spare
    capacity after T are untouched."""
    gen = torch.Generator().manual_seed(0)
    B, H, T, D, start, kept = 2, 2, 30, 8, 12, 14
    k, v = buffers(B, H, T, D, T + 4, torch.float32, gen)
    k, v = k.cpu(), v.cpu()
    index = cut_index(B, T, start, kept, gen)
    expect_k, expect_v = k.clone(), v.clone()
    for b in range(B):
        for j in range(kept):
            expect_k[b, :, start + j], expect_v[b, :, start + j] = k[b, :, index[b, j]], v[b, :, index[b, j]]
    move_slots_torch(k[:, :, :T], v[:, :, :T], index, start)
    assert torch.equal(k, expect_k) and torch.equal(v, expect_v)
