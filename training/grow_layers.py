"""Deepen a trained model without changing what it computes (train_embedded.py --grow-layers).

Four runs of 13-19 minutes from the shipped 12-layer model left its story questions at ~40-55% (training/README.md),
and a deeper shape from scratch would take several sittings of the device's 30 minutes. Growing starts the deeper
shape from the trained one: each new layer is a copy of the layer before it with its attention and MLP output
projections zeroed, so it adds nothing to the residual stream and the grown model's logits are the old model's
until training moves the new layers.
"""

from __future__ import annotations

import copy

import torch


def insert_after(old: int, extra: int) -> list[int]:
    """Indices of the old layers after which a new layer goes: `extra` of them, spread evenly over the stack."""
    assert 0 < extra <= old, f"grow by 1 to {old} layers, not {extra}"
    return [int((k + 0.5) * old / extra) for k in range(extra)]  # spaced >= 1 apart: distinct


def grow_layers(model, layers: int) -> None:
    """Give a LlamaForCausalLM `layers` decoder layers in place (config included); its function is unchanged."""
    old = list(model.model.layers)
    after = set(insert_after(len(old), layers - len(old)))
    grown = []
    for i, layer in enumerate(old):
        grown.append(layer)
        if i in after:
            # the memo keeps the model's one config shared: a copied config would miss set_attn_implementation
            twin = copy.deepcopy(layer, memo={id(model.config): model.config})
            with torch.no_grad():
                twin.self_attn.o_proj.weight.zero_()
                twin.mlp.down_proj.weight.zero_()
            grown.append(twin)
    for idx, layer in enumerate(grown):
        layer.self_attn.layer_idx = idx  # the KV cache's index of the layer
    model.model.layers = torch.nn.ModuleList(grown)
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[0]] * layers
