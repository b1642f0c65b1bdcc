"""RMSNorm of a decode step's rows: the Triton kernel (rms_norm_triton.py) on CUDA, else torch's fused
F.rms_norm, which is also its twin in the tests.

At batch 1 torch's kernel spends ~6 us on one row of 4096 (its layer-norm kernel gives a row one block),
65 times a step of the 7B shape: ~0.39 ms of a ~6 ms step (benchmarks/step_graph_time_7b_1k_before_fusions.json). The
kernel reads a row in one go with more warps. Rows of a prefill keep torch's kernel, which fills the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..optional import importable

MAX_ROWS = 64  # decode steps: one row a sequence
MAX_WIDTH = 16384


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., C] normalised by its root mean square over C, times weight [C]; float32 inside."""
    if kernel_fits(x, weight):
        from .rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def add_rms_norm(h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + y, its RMSNorm times weight): a layer's residual add and the norm after it, one kernel for decode
    rows (32 fewer small kernels a step of the 7B shape)."""
    if kernel_fits(h, weight) and y.shape == h.shape and y.dtype == h.dtype and y.stride(-1) == 1:
        from .rms_norm_triton import add_rms_norm_triton

        return add_rms_norm_triton(h, y, weight, eps)
    total = h + y
    return total, F.rms_norm(total, (total.shape[-1],), weight, eps)


def kernel_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.is_cuda and x.numel() <= MAX_ROWS * x.shape[-1] and x.shape[-1] <= MAX_WIDTH \
        and x.stride(-1) == 1 and weight.dtype == x.dtype \
        and importable("triton", "RMSNorm uses torch's kernel on the GPU")
