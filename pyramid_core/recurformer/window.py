"""GroupWindow: the training-free twin of a GroupRNN, one KV group run as sink + sliding-window attention.

The same replaced KV group as a GroupRNN (the group's G query heads sharing one k/v projection, RoPE at
the original positions), but instead of a learned recurrence each query head h attends with softmax to

    keys at original positions p with  0 <= p <= q_pos  and  (p < sink_len  or  q_pos - window < p)

(StreamingLLM's attention sinks plus a recent window; the window counts the query's own token). Pads
(position -1) are never attended and never stored. The state is a fixed-size `WindowState` of
sink_len + window slots holding post-RoPE keys, values and their positions, so memory does not grow
with the sequence, and the engine calls a GroupWindow exactly like a GroupRNN:

    forward(x [B, T, C], positions [B, T], state=None) -> (y [B, T, G * D], state)   prefill
    step(x [B, 1, C], positions [B, 1], state)         -> (y [B, 1, G * D], state)   decode

y is in x's dtype, query heads in order, for the group's slots of the layer's unchanged o_proj. With
window >= the sequence length and sink_len 0 nothing is evicted and y is the layer's exact attention.

Eviction keeps, per row, every sink token and the `window` newest non-sink tokens; with consecutive
positions (what the engine passes) those are exactly the keys any later query can see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .rnn import GroupRNN, RNNConfig

QUERY_BLOCK = 1024      # prefill queries per block: the logits are [B, G, QUERY_BLOCK, slots + T]
_SINK_PRIORITY = 2 ** 62  # sinks outrank every non-sink position when choosing what to keep


@dataclass
class WindowState:
    """Fixed-size per-row store of one GroupWindow: S = sink_len + window slots, in no particular order.

    keys:       [B, S, D] post-RoPE keys (zero in empty slots), in the model's dtype.
    values:     [B, S, D] values (zero in empty slots).
    positions:  [B, S] original positions, -1 for an empty slot.
    """

    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.positions))


class GroupWindow(nn.Module):
    """One replaced KV group run as sink + sliding-window softmax attention (see the module docstring).

    The q/k/v projections, q/k norms and RoPE are a composed GroupRNN's (`self.qkv`); its decay and
    readout parameters are unused. The query scale is cfg.scale (the attention's `scaling`).
    """

    def __init__(self, cfg: RNNConfig, sink_len: int = 4, window: int = 64):
        super().__init__()
        if sink_len < 0:
            raise ValueError(f"sink_len must be at least 0, got {sink_len}")
        if window < 1:
            raise ValueError(f"window must be at least 1 (it counts the query's own token), got {window}")
        self.cfg, self.sink_len, self.window = cfg, sink_len, window
        self.qkv = GroupRNN(cfg)

    @property
    def slots(self) -> int:
        return self.sink_len + self.window

    @classmethod
    def from_attention(cls, attn: nn.Module, rotary: nn.Module, group: int, cfg: RNNConfig,
                       sink_len: int = 4, window: int = 64) -> "GroupWindow":
        """Copy group `group`'s q/k/v slices (and q_norm/k_norm) and the RoPE frequencies, as GroupRNN does."""
        module = cls(cfg, sink_len, window)
        module.qkv = GroupRNN.from_attention(attn, rotary, group, cfg)
        return module

    def to_model(self, device, dtype: torch.dtype) -> "GroupWindow":
        """Move to a model's device and dtype, keeping the RoPE frequencies in float32."""
        self.qkv.to_model(device, dtype)
        return self

    def init_state(self, batch: int, device=None, dtype: torch.dtype | None = None) -> WindowState:
        """An empty state: every slot at position -1. dtype defaults to the projections' dtype."""
        device = device or self.qkv.inv_freq.device
        dtype = dtype or self.qkv.k_proj.weight.dtype
        kv = torch.zeros(batch, self.slots, self.cfg.head_dim, device=device, dtype=dtype)
        return WindowState(kv, kv.clone(), torch.full((batch, self.slots), -1, device=device, dtype=torch.long))

    # ------------------------------------------------------------------------- entry points

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                state: WindowState | None = None) -> tuple[torch.Tensor, WindowState]:
        """Prefill: x [B, T, C], positions [B, T] (-1 = pad) -> (y [B, T, G*D], state).

        The T new tokens attend over the state's slots and each other; then the state keeps the sinks and
        the `window` newest non-sink tokens of both.
        """
        B, T, _ = x.shape
        assert positions.shape == (B, T), f"positions {tuple(positions.shape)} != {(B, T)}"
        if state is None:
            state = self.init_state(B, x.device)
        assert state.positions.shape == (B, self.slots), \
            f"state has {tuple(state.positions.shape)} slots, expected {(B, self.slots)}"
        q, k, v, _ = self.qkv.project(x, positions)   # q [B, G, T, D] scaled; k, v [B, G, T, D], one head
        keys = torch.cat((state.keys, k[:, 0].to(state.keys.dtype)), dim=1)       # [B, S + T, D]
        values = torch.cat((state.values, v[:, 0].to(state.values.dtype)), dim=1)
        k_pos = torch.cat((state.positions, positions.long()), dim=1)             # [B, S + T]
        y = self.attend(q, positions.long(), keys, values, k_pos)
        return y.to(x.dtype), self.keep(keys, values, k_pos)

    def step(self, x: torch.Tensor, positions: torch.Tensor,
             state: WindowState | None) -> tuple[torch.Tensor, WindowState]:
        """Decode one token per row: x [B, 1, C], positions [B, 1]; state as returned before."""
        assert x.shape[1] == 1, f"step takes one token, got {x.shape[1]}"
        return self.forward(x, positions, state)

    # ------------------------------------------------------------------------- pieces

    def visible(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """[B, T, S] True where query position q_pos [B, T] may see key position k_pos [B, S]."""
        qp, kp = q_pos[:, :, None], k_pos[:, None, :]
        return (kp >= 0) & (kp <= qp) & ((kp < self.sink_len) | (kp > qp - self.window))

    def attend(self, q, q_pos, keys, values, k_pos) -> torch.Tensor:
        """q [B, G, T, D] (scaled), keys and values [B, S, D] -> [B, T, G*D] in float32 (float64 if given).

        Pad queries see nothing and get zeros. Queries go in blocks of QUERY_BLOCK to bound the logits.
        """
        B, G, T, D = q.shape
        dtype = torch.promote_types(q.dtype, torch.float32)
        keys, values = keys.to(dtype)[:, None], values.to(dtype)[:, None]     # [B, 1, S, D]
        out = []
        for t0 in range(0, T, QUERY_BLOCK):
            qb = q[:, :, t0:t0 + QUERY_BLOCK].to(dtype)
            seen = self.visible(q_pos[:, t0:t0 + QUERY_BLOCK], k_pos)[:, None]   # [B, 1, t, S]
            logits = (qb @ keys.transpose(-1, -2)).masked_fill(~seen, float("-inf"))
            probs = logits.softmax(-1).masked_fill(~seen.any(-1, keepdim=True), 0.0)
            out.append(probs @ values)                                        # [B, G, t, D]
        o = torch.cat(out, dim=2) if out else q.new_zeros(q.shape).to(dtype)
        return o.transpose(1, 2).reshape(B, T, G * D)

    def keep(self, keys, values, k_pos) -> WindowState:
        """The state after eviction: per row every sink, then the `window` newest non-sinks; pads never."""
        priority = torch.where(k_pos < 0, -1, torch.where(k_pos < self.sink_len, k_pos + _SINK_PRIORITY, k_pos))
        idx = priority.topk(self.slots, dim=-1).indices                       # [B, slots]
        empty = (priority.gather(1, idx) < 0)[..., None]
        rows = idx[..., None].expand(-1, -1, keys.shape[-1])
        return WindowState(keys.gather(1, rows).masked_fill(empty, 0), values.gather(1, rows).masked_fill(empty, 0),
                           k_pos.gather(1, idx).masked_fill(empty[..., 0], -1))


def window_modules(lm, groups, sink_len: int = 4, window: int = 64) -> dict[int, dict[int, GroupWindow]]:
    """{layer: {group: GroupWindow}} for the given (layer, group) pairs of lm, on lm's device and dtype,
    frozen and in eval mode: the training-free counterpart of an adapter's lm.recurrent."""
    from .adapter import rnn_config

    cfg, base = rnn_config(lm), lm.model.model
    out: dict[int, dict[int, GroupWindow]] = {}
    for layer, group in groups:
        module = GroupWindow.from_attention(base.layers[layer].self_attn, base.rotary_emb, group, cfg,
                                            sink_len, window)
        out.setdefault(layer, {})[group] = module.to_model(lm.device, lm.dtype).eval().requires_grad_(False)
    return out
