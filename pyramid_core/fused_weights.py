"""Each layer's q, k and v projections, and its MLP's gate and up, as one weight each.

A decode step at batch 1 multiplies one row by every weight. One matmul over the three (or two) reads the
same bytes in fewer launches and with fewer split-K reductions: a replay of the 7B shape's whole step ran
224 matmuls and 160 reductions, ~4.1 of its 4.9 ms (benchmarks/step_graph_time_7b_1k_settings.json).

No byte is held twice: the fused weight is the modules' own, each module's parameter becoming a view of
its rows (`param.data`), so the model's forward, the baseline and every mode read the same values. A model
whose parameters were moved or replaced since (`model.to(...)`) is fused again at its next request. Layers
whose weights differ in device or dtype, are not floating point (quantized), or lack a gated MLP are left
as they are, as is a model spread over several devices.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_lock = threading.Lock()  # requests of several threads may find the model unfused at once


@dataclass(frozen=True)
class Fused:
    """Linear modules' weights (and biases) stacked by rows; calling it gives each module's output."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    splits: tuple[int, ...]

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The modules' outputs side by side [..., sum(splits)]."""
        return F.linear(x, self.weight, self.bias)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.output(x).split(self.splits, dim=-1)

    def holds(self, modules) -> bool:
        """Whether the modules' parameters are still views of this weight (not moved or replaced since)."""
        tensors = [m.weight for m in modules] + ([m.bias for m in modules] if self.bias is not None else [])
        stored = {self.weight.untyped_storage().data_ptr()} | \
            ({self.bias.untyped_storage().data_ptr()} if self.bias is not None else set())
        return all(t.untyped_storage().data_ptr() in stored for t in tensors)


@dataclass(frozen=True)
class LayerFusion:
    qkv: Fused | None
    gate_up: Fused | None
    silu: bool = False  # the MLP's activation is SiLU: gate and up meet in one kernel (kernels/silu_mul.py)


def fused_layers(lm) -> list[LayerFusion]:
    """The model's fused layers (LoadedModel.fused), made on first use and again where the parameters
    moved; none for a model spread over several devices (its layers are each on one, but accelerate's
    hooks may also offload them)."""
    if lm.placement.spans_devices:
        return []
    layers = lm.model.model.layers
    with _lock:
        if len(lm.fused) != len(layers) or not all(still_fused(f, layer) for f, layer in zip(lm.fused, layers)):
            silu = getattr(lm.config, "hidden_act", None) in ("silu", "swish")
            lm.fused = [fuse_layer(layer, silu) for layer in layers]
            if lm.placement.head.type == "cuda":
                # the modules' former weights went back to the allocator as blocks of their own sizes, too
                # small for a layer's KV reserve: give them back to the driver rather than keep them cached
                torch.cuda.empty_cache()
        return lm.fused


def still_fused(fusion: LayerFusion, layer) -> bool:
    attn, mlp = layer.self_attn, layer.mlp
    return (fusion.qkv is None or fusion.qkv.holds((attn.q_proj, attn.k_proj, attn.v_proj))) and \
        (fusion.gate_up is None or fusion.gate_up.holds((mlp.gate_proj, mlp.up_proj)))


def fuse_layer(layer, silu: bool = False) -> LayerFusion:
    attn, mlp = layer.self_attn, layer.mlp
    gated = all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
    return LayerFusion(fuse((attn.q_proj, attn.k_proj, attn.v_proj)),
                       fuse((mlp.gate_proj, mlp.up_proj)) if gated else None, silu)


def fuse(modules) -> Fused | None:
    """Stack the modules' weights (and biases) into one tensor and make each module's parameters views of
    its rows; None where they cannot share one tensor."""
    weights = [m.weight for m in modules]
    biases = [m.bias for m in modules]
    if not all(isinstance(m, torch.nn.Linear) for m in modules) or \
            len({(w.device, w.dtype, w.shape[1]) for w in weights}) != 1 or \
            not weights[0].dtype.is_floating_point or weights[0].device.type == "meta" or \
            len({b is None for b in biases}) != 1:
        return None
    with torch.no_grad():
        weight = torch.cat([w.detach() for w in weights])
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        start = 0
        for m in modules:
            rows = m.weight.shape[0]
            m.weight.data = weight[start:start + rows]
            if bias is not None:
                m.bias.data = bias[start:start + rows]
            start += rows
    return Fused(weight, bias, tuple(w.shape[0] for w in weights))
