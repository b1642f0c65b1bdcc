"""The decode step's RMSNorm kernel (kernels/rms_norm_triton.py) against torch's F.rms_norm, its twin: rows
of widths that are and are not powers of two, rows that are views with a wider stride, fp32 and fp16.

On a CPU the Triton kernel runs in its interpreter (TRITON_INTERPRET=1, conftest.py)."""

import pytest
import torch
import torch.nn.functional as F

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.rms_norm_triton import rms_norm_triton


@pytest.mark.parametrize("rows, width, wider", [(1, 64, 64), (3, 100, 100), (2, 96, 160), (4, 4096, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_torch(rows, width, wider, dtype):
    gen = torch.Generator().manual_seed(rows * width)
    x = (torch.randn(rows, 1, wider, generator=gen) * 3).to(DEVICE, dtype)[..., :width]
    weight = torch.randn(width, generator=gen).to(DEVICE, dtype)
    out = rms_norm_triton(x, weight, 1e-5)
    assert out.shape == x.shape and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, F.rms_norm(x, (width,), weight, 1e-5), atol=tol, rtol=tol)


@pytest.mark.parametrize("rows, width, wider", [(1, 64, 64), (3, 100, 100), (2, 96, 160), (4, 4096, 4096)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_add_and_norm_kernel_equals_torch(rows, width, wider, dtype):
    """h + y stored in the model's dtype, and the norm of that stored sum, as torch's add and F.rms_norm give."""
    from pyramid_core.kernels.rms_norm_triton import add_rms_norm_triton

    gen = torch.Generator().manual_seed(rows + width)
    h = (torch.randn(rows, 1, wider, generator=gen) * 3).to(DEVICE, dtype)[..., :width]
    y = torch.randn(rows, 1, width, generator=gen).to(DEVICE, dtype)
    weight = torch.randn(width, generator=gen).to(DEVICE, dtype)
    total, out = add_rms_norm_triton(h, y, weight, 1e-5)
    assert total.shape == out.shape == h.shape and total.dtype == out.dtype == dtype
    torch.testing.assert_close(total, h + y, atol=0, rtol=0)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, F.rms_norm(h + y, (width,), weight, 1e-5), atol=tol, rtol=tol)
