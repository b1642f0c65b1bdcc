"""PyramidInfer's voter rows from a decode step: each layer's per-head logits over its newest slots and their
softmax's log-sum-exp (the decode kernel's newest= output) become one head-averaged row of probabilities,
written into the voters' ring at a slot a device tensor names:

    rows[l, b, slot, a] = share[l] * sum_h exp(logits[l, b, h, a] - lse[l, b, h])

share[l] is 1 / the layer's heads (0 for a layer without voters). The Triton kernel (head_mean_triton.py) on
CUDA does every layer in one launch, a step's one write inside its graph; elsewhere the torch twin below,
which the tests compare it with. (Normalised inside the decode kernel instead, each (row, head)'s program
looped over the newest slots alone: PyramidInfer at 0.92x the baseline on the embedded model at batch 1 and 8k,
1.03x with this launch; H200, 2026-12-03, benchmarks/modes/.)
"""

from __future__ import annotations

import torch

from ..optional import importable


def head_mean_torch(logits: torch.Tensor, lse: torch.Tensor, share: torch.Tensor, rows: torch.Tensor,
                    slot: torch.Tensor) -> None:
    """logits [L, B, H, N] (-inf where a head did not see a slot, and for heads a layer lacks), lse [L, B, H],
    share [L], rows [L, B, S, >= N] (the first N columns written), slot [1] long on the device."""
    mean = (logits - lse[..., None]).exp().sum(2) * share[:, None, None]
    rows[..., :logits.shape[-1]].index_copy_(2, slot, mean[:, :, None])


def head_mean(logits: torch.Tensor, lse: torch.Tensor, share: torch.Tensor, rows: torch.Tensor,
              slot: torch.Tensor) -> None:
    """As head_mean_torch; the Triton kernel on CUDA."""
    if logits.is_cuda and importable("triton", "PyramidInfer's voter rows use PyTorch on the GPU"):
        from .head_mean_triton import head_mean_triton

        return head_mean_triton(logits, lse, share, rows, slot)
    return head_mean_torch(logits, lse, share, rows, slot)
