"""A naive decoder built from HF's own Llama modules, for reference implementations of selection rules:
every key and value of every token is kept, and attention is masked to the positions a rule holds."""

import math

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


class NaiveLlama:
    """Runs tokens one call at a time; layer l attends only to the positions in held[l] (None: all)."""

    def __init__(self, lm):
        self.base, cfg = lm.model.model, lm.config
        self.H, self.H_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.D = cfg.hidden_size // self.H
        self.keys = [None] * len(self.base.layers)    # [H, t, D], heads repeated per group
        self.values = [None] * len(self.base.layers)

    def forward(self, ids: list[int], start: int, held=None, attention_cb=None):
        """Feed tokens at positions start.. ; attention_cb(layer, probs [H, t, T_all], visible [t, T_all])
        sees each layer's attention before its output is used. Returns nothing (callers read the cb)."""
        h = self.base.embed_tokens(torch.tensor([ids]))
        pos = torch.arange(start, start + len(ids))[None]
        for idx, layer in enumerate(self.base.layers):
            x = layer.input_layernorm(h)
            q = layer.self_attn.q_proj(x).view(1, -1, self.H, self.D).transpose(1, 2)
            k = layer.self_attn.k_proj(x).view(1, -1, self.H_kv, self.D).transpose(1, 2)
            v = layer.self_attn.v_proj(x).view(1, -1, self.H_kv, self.D).transpose(1, 2)
            cos, sin = self.base.rotary_emb(h, pos)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            group = self.H // self.H_kv
            k, v = k[0].repeat_interleave(group, 0), v[0].repeat_interleave(group, 0)
            self.keys[idx] = k if self.keys[idx] is None else torch.cat([self.keys[idx], k], 1)
            self.values[idx] = v if self.values[idx] is None else torch.cat([self.values[idx], v], 1)
            total = self.keys[idx].shape[1]
            visible = torch.tensor([[j <= start + i and (held is None or held[idx] is None or j in held[idx]
                                     or j >= start) for j in range(total)] for i in range(len(ids))])
            logits = q[0] @ self.keys[idx].transpose(-1, -2) / math.sqrt(self.D)
            probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)  # [H, t, T]
            if attention_cb is not None:
                attention_cb(idx, probs)
            out = (probs @ self.values[idx]).transpose(0, 1).reshape(1, len(ids), self.H * self.D)
            h = h + layer.self_attn.o_proj(out)
            h = h + layer.mlp(layer.post_attention_layernorm(h))


def random_prompt(n: int, seed: int = 0) -> torch.Tensor:
    """[1, n] token ids of the tiny models' vocabulary (special ids below 3 left out), seeded."""
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))
