"""RecurFormer adapters: the trained GroupRNNs of a model, saved beside it and attached at load time.

On disk an adapter is a directory with model.safetensors (every GroupRNN's tensors, keyed
"{layer}.{group}.{parameter}") and adapter.json (base model, groups, RNNConfig, training stats).

`apply_adapter` attaches the modules as a plain attribute of the LoadedModel instance,

    lm.recurrent = {layer: {group: GroupRNN}}

and changes no class and no module of the model: the engine reads `lm.recurrent` and runs those
groups as RNNs (see GroupRNN for the call contract).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .rnn import GroupRNN, RNNConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "adapter.json"
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed at init: GroupRNN copies it


@dataclass
class Adapter:
    """Everything needed to rebuild the GroupRNNs of one model.

    base_model:  the name the model was loaded by when converted (informational: a mismatch warns).
    groups:      [layer, kv_group] pairs, sorted.
    config:      RNNConfig fields shared by every GroupRNN.
    state_dict:  tensors keyed "{layer}.{group}.{parameter}".
    stats:       training record; stats["groups"]["l:g"] holds stage A's initial_loss and final_loss,
                 stats["distill"] stage B's KL before and after, stats["init_adapter"] the adapter
                 training started from (convert.py).
    """

    base_model: str
    groups: list[list[int]]
    config: dict
    state_dict: dict[str, torch.Tensor]
    stats: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def modules(self) -> dict[int, dict[int, GroupRNN]]:
        """{layer: {group: GroupRNN}} with this adapter's weights (float32, CPU)."""
        cfg = RNNConfig(**self.config)
        prefixes = tuple(f"{layer}.{group}." for layer, group in self.groups)
        stray = [k for k in self.state_dict if not k.startswith(prefixes)]
        if stray:
            raise ValueError(f"adapter tensors {stray[:4]} belong to no listed group")
        out: dict[int, dict[int, GroupRNN]] = {}
        for layer, group in self.groups:
            prefix = f"{layer}.{group}."
            rnn = GroupRNN(cfg)
            try:
                rnn.load_state_dict({k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)})
            except RuntimeError as err:  # missing or mis-shaped tensors
                raise ValueError(f"adapter group {layer}:{group}: {err}") from err
            out.setdefault(layer, {})[group] = rnn
        return out


def rnn_config(lm, **overrides) -> RNNConfig:
    """The RNNConfig that fits lm's attention layers (overrides: init_decay, chunk, ...)."""
    cfg, base = lm.config, lm.model.model
    attn = base.layers[0].self_attn
    rope_type = getattr(base.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE:
        log.warning("RoPE type %r changes its frequencies with length; GroupRNNs keep the ones at load", rope_type)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    has_norm = hasattr(attn, "q_norm")
    facts = dict(hidden_size=cfg.hidden_size, head_dim=head_dim,
                 heads=cfg.num_attention_heads // cfg.num_key_value_heads,
                 qkv_bias=attn.q_proj.bias is not None, qk_norm=has_norm,
                 norm_eps=float(getattr(attn.q_norm, "variance_epsilon", cfg.rms_norm_eps)) if has_norm
                 else float(cfg.rms_norm_eps),
                 scale=float(getattr(attn, "scaling", head_dim ** -0.5)),
                 rope_scaling=float(getattr(base.rotary_emb, "attention_scaling", 1.0)))
    return RNNConfig(**{**facts, **overrides})


def save_adapter(adapter: Adapter, directory: str | Path) -> Path:
    """Write model.safetensors and adapter.json into directory (created if needed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict.items()},
              str(directory / WEIGHTS_FILE))
    meta = {k: v for k, v in asdict(adapter).items() if k != "state_dict"}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_adapter(directory: str | Path) -> Adapter:
    """Read an adapter directory written by save_adapter; unknown or missing fields raise ValueError."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists() or not (directory / WEIGHTS_FILE).exists():
        raise ValueError(f"{directory} is not an adapter: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    known = set(Adapter.__dataclass_fields__) - {"state_dict"}
    if set(meta) - known or {"base_model", "groups", "config"} - set(meta):
        raise ValueError(f"{directory / CONFIG_FILE}: expected fields {sorted(known)}, got {sorted(meta)}")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"adapter format {meta['format_version']} is not {FORMAT_VERSION}")
    return Adapter(state_dict=load_file(str(directory / WEIGHTS_FILE)), **meta)


def check_adapter(adapter: Adapter, lm) -> None:
    """Raise ValueError, saying what differs, when the adapter was not made for a model of lm's shape."""
    cfg = lm.config
    want = rnn_config(lm).to_dict()
    for key in ("hidden_size", "head_dim", "heads", "qkv_bias", "qk_norm"):
        if adapter.config.get(key) != want[key]:
            raise ValueError(f"adapter does not fit this model: {key} is {adapter.config.get(key)} in the adapter, "
                             f"{want[key]} in the model")
    L, G = cfg.num_hidden_layers, cfg.num_key_value_heads
    bad = [p for p in adapter.groups if not (0 <= p[0] < L and 0 <= p[1] < G)]
    if bad:
        raise ValueError(f"adapter groups {bad} are outside this model's {L} layers x {G} KV groups")
    if adapter.base_model != lm.name:
        log.warning("adapter was converted from %r, applying it to %r", adapter.base_model, lm.name)


def apply_adapter(lm, dir_or_adapter: str | Path | Adapter) -> dict[int, dict[int, GroupRNN]]:
    """Attach the adapter's GroupRNNs as lm.recurrent = {layer: {group: GroupRNN}} (on lm's device and dtype).

    The modules are frozen and in eval mode; the model itself is not modified. Returns lm.recurrent.
    """
    adapter = dir_or_adapter if isinstance(dir_or_adapter, Adapter) else load_adapter(dir_or_adapter)
    check_adapter(adapter, lm)
    modules = adapter.modules()
    devices = lm.placement.layers  # each layer's groups run on that layer's device
    for layer, by_group in modules.items():
        for rnn in by_group.values():
            rnn.to_model(devices[layer], lm.dtype).eval().requires_grad_(False)
    lm.recurrent = modules
    log.info("RecurFormer adapter: %d KV groups run as linear RNNs", len(adapter.groups))
    return modules
