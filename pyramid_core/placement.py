"""Where each part of a model sits when accelerate spread it over the GPUs of one host (device_map).

accelerate moves hidden states between devices with hooks on the blocks named in the device map
(a decoder layer, the final norm). The engine never calls those blocks: it calls their submodules
(q_proj, mlp, ...) itself (docs/design.md, "Why our own loop"), so no hook moves anything for it.
Instead the engine reads this placement once per request and moves the hidden state, its positions
and RoPE tables to a layer's device where a layer sits on another device than the one before it;
everything a layer makes (its cache, its policy scores, its decode kernels) is made on its device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    """The devices of a model's embeddings, of each decoder layer, of the final norm and of lm_head."""

    embed: torch.device
    layers: tuple[torch.device, ...]
    norm: torch.device
    head: torch.device

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Every device the model uses, in the order the loop meets them."""
        return tuple(dict.fromkeys((self.embed, *self.layers, self.norm, self.head)))

    @property
    def spans_devices(self) -> bool:
        return len(self.devices) > 1


def module_device(module: torch.nn.Module, name: str) -> torch.device:
    """The one device every parameter of `module` sits on; ValueError when they sit on several (a
    device map that splits a layer) or on none (weights offloaded to disk, which the loop cannot run)."""
    devices = {p.device for p in module.parameters()}
    if len(devices) != 1:
        found = ", ".join(sorted(map(str, devices))) or "no parameters"
        raise ValueError(f"{name} must sit on one device, found {found}: keep each decoder layer whole "
                         "in the device_map")
    device = devices.pop()
    if device.type == "meta":
        raise ValueError(f"{name} is offloaded (its weights are on the meta device); the engine runs only "
                         "models whose weights are all on GPUs or the CPU")
    return device


def placement_of(model: torch.nn.Module) -> Placement:
    """The placement of a Llama-like causal LM (model.model.{embed_tokens, layers, norm}, model.lm_head)."""
    base = model.model
    return Placement(embed=module_device(base.embed_tokens, "embed_tokens"),
                     layers=tuple(module_device(layer, f"layer {i}") for i, layer in enumerate(base.layers)),
                     norm=module_device(base.norm, "the final norm"),
                     head=module_device(model.lm_head, "lm_head"))


def follow(device: torch.device, h: torch.Tensor, pos: torch.Tensor, rope: tuple):
    """h, pos and the RoPE tables on `device`: the same objects when h already is there (the tables and
    positions always travel with h), so a model on one device pays one comparison per layer."""
    if h.device == device:
        return h, pos, rope
    return h.to(device), pos.to(device), tuple(t.to(device) for t in rope)
