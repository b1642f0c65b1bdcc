"""SiLU(gate) x up of a decode step's rows, gate and up side by side in one tensor (the fused gate/up matmul's
output, fused_weights.py): the Triton kernel (silu_mul_triton.py) on CUDA, else torch's two kernels, which are
also its twin in the tests.

At batch 1 torch runs SiLU and the product as two kernels of ~2 us each, 32 times a step of the 7B shape
(~0.12 ms of a ~4.9 ms replay, benchmarks/step_graph_time_7b_1k_settings.json); one kernel reads gate and up once and
writes the product. Rows of a prefill keep torch's kernels, which fill the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..optional import importable

MAX_ROWS = 64  # decode steps: one row a sequence


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [..., 2I] -> silu(gate_up[..., :I]) * gate_up[..., I:], [..., I]."""
    if kernel_fits(gate_up):
        from .silu_mul_triton import silu_mul_triton

        return silu_mul_triton(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def kernel_fits(gate_up: torch.Tensor) -> bool:
    return gate_up.is_cuda and gate_up.numel() <= MAX_ROWS * gate_up.shape[-1] and gate_up.stride(-1) == 1 \
        and importable("triton", "SiLU x up uses torch's kernels on the GPU")
