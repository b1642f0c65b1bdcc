"""RecurFormer (Yan et al. 2024, arXiv 2410.12850): recency-aware KV groups run as linear RNNs.

The groups to replace and their trained RNNs come from an adapter (recurformer/convert.py). A replaced
group keeps a fixed-size state and no keys or values, so its share of the KV cache disappears; the
attention groups that remain keep the full cache (`recurformer`) or PyramidInfer's
(`pyramid+recurformer`).

`variant` picks what runs in the replaced groups, for the comparisons the paper's claim needs:
- "trained":   the adapter's trained RNNs;
- "untrained": the same RNNs at their initialisation (copied q/k/v, default decay), no training;
- "window":    the same groups as sink + sliding-window softmax attention, training-free.

The modules are built once per loaded model and shared, read-only, by every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..resources import asset
from .full import FullPolicy
from .pyramid import PyramidPolicy

DEFAULT_ADAPTER = asset("recurformer-embedded-25")
VARIANTS = ("trained", "untrained", "window")


@dataclass
class RecurrentGroups:
    """The knobs that say which recurrences replace which groups (shared by both RecurFormer modes)."""

    adapter: str = field(default="", metadata={"help": "adapter directory (default: the embedded model's)"})
    variant: str = field(default="trained", metadata={"help": "trained | untrained | window"})
    twin_window: int = field(default=64, metadata={"help": "window variant: recent tokens attended"})
    twin_sinks: int = field(default=4, metadata={"help": "window variant: first tokens attended"})

    def check_groups(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for knob in ("twin_window", "twin_sinks"):
            if int(getattr(self, knob)) != getattr(self, knob) or getattr(self, knob) < 0:
                raise ValueError(f"{knob} must be an integer >= 0, got {getattr(self, knob)}")
        if self.adapter and not (Path(self.adapter) / "adapter.json").exists():
            raise ValueError(f"adapter: no RecurFormer adapter at {self.adapter}")

    def recurrent_modules(self, lm) -> dict:
        attached = getattr(lm, "recurrent", None)  # load_model(..., adapter=DIR) attached one
        if attached and not self.adapter and self.variant == "trained":
            return attached
        per_model = lm.recurrence_cache
        key = (self.adapter, self.variant, self.twin_window, self.twin_sinks)
        if key not in per_model:
            per_model[key] = build_modules(lm, self.adapter or str(DEFAULT_ADAPTER), self.variant,
                                           self.twin_window, self.twin_sinks)
        return per_model[key]


def build_modules(lm, adapter_dir: str, variant: str, window: int, sinks: int) -> dict:
    from ..recurformer.adapter import check_adapter, load_adapter
    from ..recurformer.rnn import GroupRNN, RNNConfig

    if not (Path(adapter_dir) / "adapter.json").exists():
        raise ValueError(f"no RecurFormer adapter at {adapter_dir}: make one with "
                         f"`python -m pyramid_core convert --model {lm.name} --replace 0.25 --out DIR`")
    adapter = load_adapter(adapter_dir)
    check_adapter(adapter, lm)
    if variant == "trained":
        modules = adapter.modules()
    else:
        cfg, base = RNNConfig(**adapter.config), lm.model.model
        modules = {}
        for layer, group in adapter.groups:
            attn = base.layers[layer].self_attn
            if variant == "untrained":
                module = GroupRNN.from_attention(attn, base.rotary_emb, group, cfg)
            else:
                from ..recurformer.window import GroupWindow

                module = GroupWindow.from_attention(attn, base.rotary_emb, group, cfg, sink_len=sinks,
                                                    window=window)
            modules.setdefault(layer, {})[group] = module
    devices = lm.placement.layers  # each layer's groups run on that layer's device
    for layer, by_group in modules.items():
        for module in by_group.values():
            module.to_model(devices[layer], lm.dtype).eval().requires_grad_(False)
    return modules


@dataclass
class RecurFormerPolicy(RecurrentGroups, FullPolicy):
    """RecurFormer alone: replaced groups as recurrences, every other group keeps its full cache."""

    name = "recurformer"

    def __post_init__(self):
        self.check_groups()


@dataclass
class PyramidRecurFormerPolicy(RecurrentGroups, PyramidPolicy):
    """Both: replaced groups as recurrences, PyramidInfer on the attention groups that remain."""

    name = "pyramid+recurformer"

    def __post_init__(self):
        PyramidPolicy.__post_init__(self)
        self.check_groups()
