"""Move each row's chosen slots down, in place: keys[b, :, start + j] = keys[b, :, index[b, j]] (and values),
where each row's index is ascending and index[b, j] >= start + j. PyramidInfer's decode cut keeps a few slots
of its chunk and every slot of its recent window after it, all moving down over the dropped ones
(cache.LayerCache._keep_tail).

torch spells it as a gather into new tensors and a copy back, for the keys and for the values: four kernels
that write and read every moved slot twice, 0.18 ms for one gather of a layer's keys at Table 1's 134 rows
(H200, 2026-12-02), at 11 cuts of 40 layers a generation. The Triton kernel (move_slots_triton.py) moves the
keys and values of a (row, head) in one program, with no copy between; `move_slots_torch` is its twin, what
runs on a CPU, and the reference in the tests.
"""

from __future__ import annotations

import torch

from ..optional import importable


def gathered_slots(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the slots index [B, n] picks in each row of keys, values [B, H, T, D]: [B, H, n, D] each. A gather
    along the slots lands in the buffers' own layout; indexing [rows, :, index] made [B, n, H, D] and a transposed
    copy of it: 0.29 -> 0.18 ms for a layer's keys at Table 1's 134 rows (H200, 2026-12-02)."""
    B, H, _, D = keys.shape
    along = index[:, None, :, None].expand(B, H, index.shape[1], D)
    return keys.gather(2, along), values.gather(2, along)


def move_slots_torch(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor, start: int) -> None:
    """keys, values [B, H, T, D]; index [B, n] (long): slot index[b, j] moves to slot start + j."""
    end = start + index.shape[1]
    # gathered copies first, so a slot is read before anything is written over it
    keys[:, :, start:end], values[:, :, start:end] = gathered_slots(keys, values, index)


def move_slots(keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor, start: int) -> None:
    """As move_slots_torch: the Triton kernel on a GPU, the twin elsewhere."""
    if index.shape[1] == 0:
        return
    if kernel_fits(keys, values):
        from .move_slots_triton import move_slots_triton

        move_slots_triton(keys, values, index, start)
    else:
        move_slots_torch(keys, values, index, start)


def kernel_fits(keys: torch.Tensor, values: torch.Tensor) -> bool:
    D = keys.shape[-1]
    return keys.is_cuda and keys.stride(-1) == 1 and values.stride(-1) == 1 and D & (D - 1) == 0 and D >= 16 \
        and importable("triton", "a cut's kept slots are moved with torch's gather on the GPU")
