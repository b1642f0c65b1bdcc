"""PyramidInfer's voter rows from a step's per-head logits (kernels/head_mean.py): the Triton kernel against
its torch twin, and the twin against the formula written out (a GPU, or Triton's interpreter on a CPU)."""

import torch

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels.head_mean import head_mean_torch
from pyramid_core.kernels.head_mean_triton import head_mean_triton


def test_the_kernel_writes_each_layers_mean_of_heads_at_the_slot():
    """Every layer and row gets share x the sum over heads of exp(logit - lse) at the slot the device tensor
    names, in its first N columns (N = 300: over two blocks of the kernel); the padding heads of a layer with
    fewer (logits -inf) add nothing, a layer without voters (share 0) writes zeros, and every other slot and
    column keeps what it held."""
    gen = torch.Generator().manual_seed(4)
    L, B, H, N, S = 3, 2, 4, 300, 5
    logits = torch.randn(L, B, H, N, generator=gen) * 3
    logits[1, :, 2:] = float("-inf")  # layer 1 has two heads
    logits[0, :, :, 250:] = float("-inf")  # slots no head saw
    lse = torch.randn(L, B, H, generator=gen)
    share = torch.tensor([1 / 4, 1 / 2, 0.0])
    before = torch.randn(L, B, S, N + 1, generator=gen)
    want = before.clone()
    for layer in range(L):
        want[layer, :, 3, :N] = share[layer] * (logits[layer] - lse[layer, :, :, None]).exp().sum(1)
    outputs = {}
    for name, fn in (("twin", head_mean_torch), ("kernel", head_mean_triton)):
        rows = before.clone().to(DEVICE)
        fn(*(t.to(DEVICE) for t in (logits, lse, share)), rows, torch.tensor([3], device=DEVICE))
        outputs[name] = rows.cpu()
    torch.testing.assert_close(outputs["twin"], want)
    torch.testing.assert_close(outputs["kernel"], want)
    assert outputs["kernel"][2, :, 3, :N].abs().sum() == 0 and outputs["kernel"][0, :, 3, 250:N].abs().sum() == 0
