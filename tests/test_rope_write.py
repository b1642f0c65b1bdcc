"""The fused RoPE + slot write of the whole-step graph (kernels/rope_write.py) against its twin, the engine's
apply_rope and LayerCache.write_slots: rotated queries returned, and the rotated key, the value and the
position in each row's own slot, nothing else in the cache touched.

On a CPU the Triton kernel runs in its interpreter (TRITON_INTERPRET=1, conftest.py)."""

import pytest
import torch

from pyramid_core.cache import LayerCache
from pyramid_core.kernels.rope_write import rope_write_torch

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.rope_write_triton import rope_write_triton


def inputs(B, H, H_kv, D, dtype, gen):
    """q, k, v as project_qkv hands them over: [B, heads, 1, D] views of [B, 1, heads * D] projections."""
    def heads(n):
        return torch.randn(B, 1, n * D, generator=gen).to(DEVICE, dtype).view(B, 1, n, D).transpose(1, 2)
    angles = torch.rand(B, 1, 1, D // 2, generator=gen) * 6.0
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(DEVICE, dtype)
    sin = torch.cat((-angles.sin(), angles.sin()), -1).to(DEVICE, dtype)
    return heads(H), heads(H_kv), heads(H_kv), (cos, sin)


def filled_layer(B, H_kv, D, dtype, capacity, gen):
    layer = LayerCache(B, H_kv, D, dtype, torch.device(DEVICE), 16, 0)
    layer.presize(capacity)
    layer.keys.copy_(torch.randn(layer.keys.shape, generator=gen))
    layer.values.copy_(torch.randn(layer.values.shape, generator=gen))
    layer.positions.copy_(torch.arange(layer.positions.numel()).view(layer.positions.shape))
    return layer


@pytest.mark.parametrize("B, H, H_kv, D", [(3, 8, 2, 32), (1, 4, 4, 64), (2, 6, 3, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_twin(B, H, H_kv, D, dtype):
    gen = torch.Generator().manual_seed(B * 100 + D)
    q, k, v, rope = inputs(B, H, H_kv, D, dtype, gen)
    slot = torch.tensor([5, 17, 0][:B], device=DEVICE)  # each row its own slot
    positions = torch.tensor([[40], [77], [3]][:B], device=DEVICE)
    twin, fused = (filled_layer(B, H_kv, D, dtype, 32, torch.Generator().manual_seed(1)) for _ in range(2))
    q_twin = rope_write_torch(q, k, v, rope, twin, slot, positions)
    q_fused = rope_write_triton(q, k, v, rope, fused.keys, fused.values, fused.positions, slot, positions)
    tol = 1e-6 if dtype == torch.float32 else 2e-3  # the kernel rounds once, the twin after each op
    torch.testing.assert_close(q_fused, q_twin, atol=tol, rtol=tol)
    torch.testing.assert_close(fused.keys, twin.keys, atol=tol, rtol=tol)
    assert torch.equal(fused.values, twin.values) and torch.equal(fused.positions, twin.positions)
    written = twin.keys[torch.arange(B), :, slot]  # the test checks a real write, not two untouched caches
    assert not torch.equal(written, filled_layer(B, H_kv, D, dtype, 32, torch.Generator().manual_seed(1)).keys[
        torch.arange(B), :, slot])
