"""RecurFormer in the engine: a layer's heads split between attention and recurrent KV groups, and
their outputs merged back into the o_proj input layout.

A layer's replaced groups run as units: all its GroupRNNs as one StackedRNN (one batched step per
layer, recurformer/stacked.py), or each module alone (the window twin, and training, which needs the
gradients in each GroupRNN's own parameters). A unit is keyed by the tuple of groups it runs; its
state sits under that key in the request's per-layer state dict.

When a decode step is one CUDA graph (step_graphs.py), a layer's stack starts its step before the layer's
attention, on a side stream (`Beside`, side_stream.py): the recurrence needs the projection, not the
attention, so the two run at once and the stack's kernel leaves the step's critical path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .side_stream import SideStream

log = logging.getLogger(__name__)


@dataclass
class LayerHeads:
    """Which heads of a layer stay attention heads when some KV groups are recurrences (RecurFormer)."""

    q: torch.Tensor          # indices of the query heads that attend
    kv: torch.Tensor         # indices of the KV heads that are cached
    qkv: torch.Tensor        # both, as heads of q, k and v side by side (the fused projection's output)
    modules: dict            # {kv_group: module} of the replaced groups
    group_size: int          # query heads per KV group
    cached: tuple            # the cached KV heads, on the host
    units: dict              # {groups: module} what runs: a StackedRNN of several groups, or one module
    unit_heads: dict         # {groups: indices of the query heads whose output the unit gives}


def layer_heads(num_layers: int, num_heads: int, num_kv_heads: int, recurrent: dict,
                device, stack: bool = True) -> list[LayerHeads | None]:
    """Per layer, its LayerHeads when recurrent {layer: {kv_group: module}} replaces some of its groups.
    device: one for every layer, or a list with each layer's (a model spread over several GPUs).
    stack: run a layer's GroupRNNs as one StackedRNN (the engine); False runs each module itself
    (training: gradients must reach each GroupRNN's parameters, not a stacked copy)."""
    G = num_heads // num_kv_heads
    devices = device if isinstance(device, (list, tuple)) else [device] * num_layers
    out = []
    for idx in range(num_layers):
        replaced = recurrent.get(idx, {})
        if not replaced:
            out.append(None)
            continue
        kv = [g for g in range(num_kv_heads) if g not in replaced]
        q = [h for h in range(num_heads) if h // G not in replaced]
        units = layer_units(replaced) if stack else {(g, ): m for g, m in replaced.items()}
        unit_heads = {groups: torch.tensor([g * G + i for g in groups for i in range(G)], device=devices[idx])
                      for groups in units}
        qkv = q + [num_heads + g for g in kv] + [num_heads + num_kv_heads + g for g in kv]
        on_device = (torch.tensor(i, dtype=torch.long, device=devices[idx]) for i in (q, kv, qkv))
        out.append(LayerHeads(*on_device, replaced, G, tuple(kv), units, unit_heads))
    return out


def layer_units(replaced: dict) -> dict:
    """{groups: module}: the layer's GroupRNNs as one stack when they can be (one config, device and
    dtype: any adapter's), else each module alone, which gives the same outputs one group at a time.
    A single group is stacked too: a stack's decode step is the fused kernel (stacked.FUSED_STEP), a
    GroupRNN's ~40 small kernels (the embedded model's layers 2 and 4 lose one group each)."""
    from .recurformer.rnn import GroupRNN
    from .recurformer.stacked import stack

    groups = sorted(replaced)
    rnns = [replaced[g] for g in groups]
    if all(type(m) is GroupRNN for m in rnns):
        try:
            return {tuple(groups): stack(rnns)}
        except ValueError as err:  # StackedRNN refuses groups that differ
            log.warning("replaced groups %s run one by one: %s", groups, err)
    return {(g, ): replaced[g] for g in groups}


def run_groups(heads: LayerHeads, x: torch.Tensor, pos: torch.Tensor, states: dict, phase: str,
               projected: bool = False, into: torch.Tensor | None = None) -> dict:
    """Each unit's output {groups: y [B, T, H_unit * D]}: the chunked forward at prefill, one step when
    decoding. `states` {groups: state} moves on in place. projected: x is the layer's single stack's
    projection (joint_projection.py), not the layer's normed input. into: the o_proj input [B, H, 1, D]
    of a projected decode step, where the stack writes its heads itself (its kernel stores them there:
    no output of its own, no copy); such a unit has no entry in the result."""
    ys = {}
    for groups, module in heads.units.items():
        if projected and phase == "decode" and into is not None:
            _, states[groups] = module.step_projected(x, pos, states.get(groups), into, heads.unit_heads[groups])
            continue
        if projected:
            run = module.forward_projected if phase == "prefill" else module.step_projected
        else:
            run = module.forward if phase == "prefill" else module.step
        ys[groups], states[groups] = run(x, pos, states.get(groups))
    return ys


def merge_recurrent(out, heads: LayerHeads, ys: dict, num_heads: int, full: torch.Tensor | None = None):
    """Put the attention heads' output [B, H_attn, T, D] and each unit's recurrent output
    ys {groups: [B, T, H_unit * D]} into the o_proj input layout [B, H, T, D]: `full` where given (the
    units that wrote their heads there have no ys entry), else a new tensor.

    index_copy_, not indexed assignment: on a CPU torch's advanced-indexing kernels took ~15 ms for
    one decode step's [1, 32, 1, 128] with two threads, index_copy_ microseconds; on a GPU both are one
    kernel."""
    if full is None:
        groups0, y0 = next(iter(ys.items()))
        B, T = y0.shape[:2]
        D = y0.shape[-1] // len(heads.unit_heads[groups0])
        full = (y0 if out is None else out).new_empty(B, num_heads, T, D)
    if out is not None:
        full.index_copy_(1, heads.q, out)
    for groups, y in ys.items():
        place_heads(full, heads.unit_heads[groups], y)
    return full


@dataclass
class Beside:
    """A decode step's recurrences started before attention: `full`, the o_proj input [B, H, 1, D] into
    which they write their heads, the heads that attend (`attending`: attention writes those, `into`),
    and the side stream the recurrences run on."""

    full: torch.Tensor
    attending: torch.Tensor
    side: SideStream

    @property
    def into(self) -> tuple:
        """attention(into=): where the attending heads' output goes."""
        return self.full, self.attending

    def merged(self, out: torch.Tensor | None) -> torch.Tensor:
        """full with the attention heads' output `out` in it (None: no head attends; full itself: attention
        wrote it there), once the current stream has waited for the side stream."""
        self.side.join()
        if out is not None and out is not self.full:
            self.full.index_copy_(1, self.attending, out)
        return self.full


def place_heads(full: torch.Tensor, places: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Copy a unit's output y [B, T, H_unit * D] into its heads `places` of the o_proj input full [B, H, T, D]."""
    B, _, T, D = full.shape
    return full.index_copy_(1, places, y.view(B, T, -1, D).transpose(1, 2).to(full.dtype))


def held_group_shares(recurrent: dict, num_layers: int, num_kv_heads: int) -> list[float]:
    """Per layer, the share of its KV groups that still keep a cache when recurrent {layer: {kv_group:
    module}} replaces some (metrics.row_kv_share weighs each layer's kept tokens by it)."""
    return [1 - len(recurrent.get(layer, {})) / num_kv_heads for layer in range(num_layers)]
