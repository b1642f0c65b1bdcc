"""The SiLU x up kernel (kernels/silu_mul_triton.py) against torch's SiLU and product, its twin: widths that are
and are not multiples of the block, rows that are views with a wider stride, fp32 and fp16.

On a CPU the Triton kernel runs in its interpreter (TRITON_INTERPRET=1, conftest.py)."""

import pytest
import torch
import torch.nn.functional as F

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.silu_mul_triton import silu_mul_triton


@pytest.mark.parametrize("rows, width, wider", [(1, 64, 128), (3, 1000, 2000), (2, 1100, 2400), (4, 2048, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_torch(rows, width, wider, dtype):
    gen = torch.Generator().manual_seed(rows * width)
    gate_up = (torch.randn(rows, 1, wider, generator=gen) * 3).to(DEVICE, dtype)[..., :2 * width]
    out = silu_mul_triton(gate_up)
    assert out.shape == (rows, 1, width) and out.dtype == dtype
    gate, up = gate_up[..., :width], gate_up[..., width:]
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, F.silu(gate) * up, atol=tol, rtol=tol)
