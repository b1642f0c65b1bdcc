"""RecurFormer in the engine: a layer's heads split between attention and recurrent KV groups, and
their outputs merged back into the o_proj input layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerHeads:
    """Which heads of a layer stay attention heads when some KV groups run as recurrences (RecurFormer)."""

    q: torch.Tensor          # indices of the query heads that attend
    kv: torch.Tensor         # indices of the KV heads that are cached
    modules: dict            # {kv_group: module} of the replaced groups
    group_size: int          # query heads per KV group
    cached: tuple            # the cached KV heads, on the host


def layer_heads(num_layers: int, num_heads: int, num_kv_heads: int, recurrent: dict,
                device) -> list[LayerHeads | None]:
    """Per layer, its LayerHeads when recurrent {layer: {kv_group: module}} replaces some of its groups.
    device: one for every layer, or a list with each layer's (a model spread over several GPUs)."""
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
        out.append(LayerHeads(torch.tensor(q, dtype=torch.long, device=devices[idx]),
                              torch.tensor(kv, dtype=torch.long, device=devices[idx]), replaced, G, tuple(kv)))
    return out


def run_groups(heads: LayerHeads, x: torch.Tensor, pos: torch.Tensor, states: dict, phase: str) -> dict:
    """Each replaced group's output {group: y [B, T, G * D]}: the chunked forward at prefill, one step
    when decoding. `states` {group: state} moves on in place."""
    ys = {}
    for group, module in heads.modules.items():
        run = module.forward if phase == "prefill" else module.step
        ys[group], states[group] = run(x, pos, states.get(group))
    return ys


def merge_recurrent(out, heads: LayerHeads, ys: dict, num_heads: int):
    """Put the attention heads' output [B, H_attn, T, D] and each replaced group's recurrent output
    ys {group: [B, T, G * D]} into the o_proj input layout [B, H, T, D] (query head h belongs to KV group
    h // group_size)."""
    B, T = next(iter(ys.values())).shape[:2]
    full = None
    if out is not None:
        full = out.new_empty(B, num_heads, T, out.shape[-1])
        full[:, heads.q] = out
    G = heads.group_size
    for group, y in ys.items():
        y = y.view(B, T, G, -1).transpose(1, 2)
        if full is None:
            full = y.new_empty(B, num_heads, T, y.shape[-1])
        full[:, group * G:(group + 1) * G] = y
    return full


def held_group_shares(recurrent: dict, num_layers: int, num_kv_heads: int) -> list[float]:
    """Per layer, the share of its KV groups that still keep a cache when recurrent {layer: {kv_group:
    module}} replaces some (metrics.row_kv_share weighs each layer's kept tokens by it)."""
    return [1 - len(recurrent.get(layer, {})) / num_kv_heads for layer in range(num_layers)]
