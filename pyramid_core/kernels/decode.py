"""Which decode attention runs: the Triton kernel (decode_triton.py) on CUDA for the shapes it handles,
else the engine's SDPA path, which is also the kernel's reference in the tests. The engine's callers
choose it per request (`generate(decode_kernel=False)`), so the benchmarks can compare the two.
"""

from __future__ import annotations

import functools

import torch

from ..optional import importable

# rows x heads per SM from which the kernel beats SDPA's flash decoding (H200: at batch 32 x 40 heads,
# ~10 per SM, it takes 0.20 ms against 0.22; at batch 8, ~2.4 per SM, 0.077 against 0.067;
# benchmarks/kernel_check_decode.json)
MIN_PROGRAMS_PER_SM = 8


def kernel_fits(q: torch.Tensor, k: torch.Tensor) -> bool:
    """The kernel handles the shapes (kernel_supports) and there are enough rows x heads to fill the GPU."""
    return kernel_supports(q, k) and q.shape[0] * q.shape[1] >= MIN_PROGRAMS_PER_SM * sm_count(q.device)


def kernel_supports(q: torch.Tensor, k: torch.Tensor) -> bool:
    """One query per row on CUDA, a power-of-two head size, fp16/bf16/fp32, and a cache to attend to."""
    D = q.shape[-1]
    return q.is_cuda and q.shape[2] == 1 and k.shape[2] > 0 and D >= 16 and D & (D - 1) == 0 \
        and q.dtype in (torch.float16, torch.bfloat16, torch.float32) \
        and importable("triton", "decode attention uses SDPA on the GPU")


@functools.cache
def sm_count(device: torch.device) -> int:
    """The device's SM count, asked of the driver once (the decode kernel's launches ask it at every step)."""
    return torch.cuda.get_device_properties(device).multi_processor_count

