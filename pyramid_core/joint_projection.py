"""RecurFormer: a layer's kept attention heads' q, k, v and its replaced groups' recurrence projection as
one matmul.

Without it a layer with replaced groups multiplies x by the whole fused q/k/v weight (fused_weights.py),
replaced heads included, gathers the kept heads out of the result, and multiplies x again by its
StackedRNN's own weight (the replaced groups' q, k, v and decay rows). Two matmuls and a gather per
layer; on the Llama-2-7B shape at batch 1 the replaced heads' rows alone are ~0.8 GB read for nothing
each step (docs/recurformer.md). Here one weight holds the kept heads' rows, then the stack's: one
matmul, whose output splits into q, k, v and the stack's projection as views, with no gather.

The cost is memory: a copy of the kept heads' rows of every layer with replaced groups (75% of those
layers' q/k/v weights with a quarter of the groups replaced: up to ~2.4 GB on the 7B shape, ~0.25 MB a layer on
the embedded model). The stack's rows are not copied twice: the stack's projection weight becomes a view
of the joint weight's tail. `PYRAMID_JOINT_QKV=0` turns it off (read once, at import: a decode graph
captured without a joint projection reads the stack's former weight, which building one lets go).

A layer gets one only when its replaced groups run as a single StackedRNN and its q/k/v are fused, on
one device and dtype; the window twin, training (each GroupRNN on its own) and unfused models keep the
two matmuls.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fused_weights import Fused
from .recurformer.stacked import StackedRNN
from .recurrent_groups import LayerHeads

_lock = threading.Lock()
# per StackedRNN: (what the joint weight was built from, the JointProjection); kept while the stack lives
_JOINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# on since its first GPU run (H200, 2026-12-02: RecurFormer on the 1B shape 0.81-1.07x the baseline without it,
# 0.89-1.13x with it, benchmarks/modes/modes_quick_2026-12-02_joint_qkv_*_1b.json)
JOINT_QKV = os.environ.get("PYRAMID_JOINT_QKV", "1") != "0"


@dataclass(frozen=True)
class JointProjection:
    """One layer's kept q, k, v heads and its stack's projection rows as one weight."""

    weight: torch.Tensor        # [(H_attn + 2 H_kv_kept) * D + W_stack, C]
    bias: torch.Tensor          # the fused bias's kept rows (zeros without one), then the stack's
    heads: tuple[int, int]      # (attending query heads, cached KV heads)
    head_dim: int

    def __call__(self, x: torch.Tensor):
        """x [B, T, C] -> (q [B, T, H_attn, D], k and v [B, T, H_kv_kept, D], the stack's projection
        [B, T, W]), each a view of one matmul's output."""
        B, T, _ = x.shape
        hq, hkv = self.heads
        D = self.head_dim
        out = F.linear(x, self.weight, self.bias)
        qkv, proj = out.split(((hq + 2 * hkv) * D, out.shape[-1] - (hq + 2 * hkv) * D), dim=-1)
        q, k, v = qkv.view(B, T, hq + 2 * hkv, D).split((hq, hkv, hkv), dim=2)
        return q, k, v, proj


def joint_projection(fused: Fused | None, heads: LayerHeads | None, head_dim: int) -> JointProjection | None:
    """The layer's JointProjection, built on first use and reused while its fused weight and stack stay
    the same objects; None where the layer cannot have one (see the module's docstring)."""
    stack = single_stack(heads)
    if stack is None or fused is None or not JOINT_QKV:
        return None
    if (fused.weight.device, fused.weight.dtype) != (stack.proj_weight.device, stack.proj_weight.dtype):
        return None
    key = (fused.weight.untyped_storage().data_ptr(), fused.weight._version, heads.cached)
    with _lock:
        cached = _JOINTS.get(stack)
        if cached is None or cached[0] != key:
            cached = (key, build(fused, heads, stack, head_dim))
            _JOINTS[stack] = cached
        return cached[1]


def single_stack(heads: LayerHeads | None) -> StackedRNN | None:
    """The layer's replaced groups as one StackedRNN, or None (no replaced group, or units run alone)."""
    if heads is None or len(heads.units) != 1:
        return None
    unit = next(iter(heads.units.values()))
    return unit if isinstance(unit, StackedRNN) else None


def build(fused: Fused, heads: LayerHeads, stack: StackedRNN, head_dim: int) -> JointProjection:
    """Copy the kept heads' rows of the fused q/k/v weight, append the stack's rows, and make the stack's
    projection weight and bias views of that tail (it stays callable on its own, with the same values)."""
    rows = (heads.qkv[:, None] * head_dim + torch.arange(head_dim, device=heads.qkv.device)).flatten()
    with torch.no_grad():
        kept_bias = fused.bias.index_select(0, rows) if fused.bias is not None else \
            fused.weight.new_zeros(rows.numel())
        weight = torch.cat((fused.weight.index_select(0, rows), stack.proj_weight))
        bias = torch.cat((kept_bias, stack.proj_bias))
        stack.proj_weight, stack.proj_bias = weight[rows.numel():], bias[rows.numel():]
    return JointProjection(weight, bias, (heads.q.numel(), heads.kv.numel()), head_dim)
