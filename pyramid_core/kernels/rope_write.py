"""RoPE on a decode step's queries and keys and the key, value and position written into the layer's slot,
as one kernel (rope_write_triton.py) inside the whole-step graph (step_graphs.py).

At batch 1 a decode step's matmuls take ~3.8 ms of the 7B shape's ~6 ms on an H200; most of the rest are
kernels of a few microseconds each, ~24 a layer, and the ~11 of them that rotate q and k (a multiply, a
cat, a multiply and an add each) and scatter k, v and the position into the slot took ~0.7 ms a step
(benchmarks/step_graph_time_7b_1k_before_fusions.json). `rope_write` runs the Triton kernel on CUDA and `rope_write_torch`,
the engine's own apply_rope and LayerCache.write_slots, elsewhere; the tests compare the two.
"""

from __future__ import annotations

import torch

from ..layers import apply_rope
from ..optional import importable


def rope_write_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope, layer, slot: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    """q [B, H, 1, D], k and v [B, H_kv, 1, D] before RoPE; rope: (cos, signed sin) [B, 1, 1, D]
    (layers.rope_tables); slot [B]: the slot each row writes; positions [B, 1]. Writes the rotated key,
    the value and the position into `layer` (a LayerCache) and returns the rotated queries."""
    layer.write_slots(slot, apply_rope(k, rope), v, positions)
    return apply_rope(q, rope)


def rope_write(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope, layer, slot: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
    """As rope_write_torch; the Triton kernel on CUDA where it fits (kernel_fits)."""
    if kernel_fits(q, layer.keys):
        from .rope_write_triton import rope_write_triton

        return rope_write_triton(q, k, v, rope, layer.keys, layer.values, layer.positions, slot, positions)
    return rope_write_torch(q, k, v, rope, layer, slot, positions)


def kernel_fits(q: torch.Tensor, keys: torch.Tensor) -> bool:
    """CUDA, one token a row, a power-of-two head size, queries in the cache's dtype, Triton importable."""
    D = q.shape[-1]
    return q.is_cuda and q.shape[2] == 1 and D >= 16 and D & (D - 1) == 0 and q.dtype == keys.dtype \
        and importable("triton", "RoPE and the slot write use PyTorch on the GPU")
