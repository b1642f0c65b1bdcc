"""The model's own modules, adapted: what the engine, distillation and recency scoring run a layer with.

We drive Hugging Face's modules ourselves (docs/design.md, "Why our own loop") and depend only on their
attributes: embed_tokens, layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj, q_norm, k_norm,
post_attention_layernorm, mlp}, norm, rotary_emb, lm_head, which Llama, Mistral, Qwen2 and Qwen3 share.

`layer_forward` is the one decoder layer: over a layer's cache (the engine) or over its own keys
(distillation's differentiable prefill).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from . import side_stream
from .attention import attention
from .fused_weights import Fused, LayerFusion, fused_layers
from .joint_projection import JointProjection, joint_projection
from .kernels import rms_norm as fused_norm
from .kernels.silu_mul import silu_mul
from .placement import Placement, placement_of
from .recurrent_groups import Beside, LayerHeads, merge_recurrent, run_groups

if TYPE_CHECKING:
    from .models import LoadedModel


@dataclass
class Parts:
    """The modules the loop calls, found once per request."""

    embed: torch.nn.Module
    layers: torch.nn.ModuleList
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    rotary: torch.nn.Module
    head_dim: int
    num_heads: int
    num_kv_heads: int
    windows: list[int | None]  # sliding-window size per layer (Mistral, Qwen2/3 sliding layers)
    placement: Placement       # the device of each module above (one for all, unless a device_map spread them)
    fused: list[LayerFusion] = field(default_factory=list)  # per layer q/k/v and gate/up as one weight, or none

    def fusion(self, idx: int) -> LayerFusion | None:
        return self.fused[idx] if self.fused else None

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def model_parts(lm: "LoadedModel") -> Parts:
    """The modules and shapes of a loaded model that the loop calls."""
    cfg, base = lm.config, lm.model.model
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Parts(embed=base.embed_tokens, layers=base.layers, norm=base.norm, lm_head=lm.model.lm_head,
                 rotary=base.rotary_emb, head_dim=head_dim, num_heads=cfg.num_attention_heads,
                 num_kv_heads=cfg.num_key_value_heads, windows=layer_windows(cfg),
                 placement=placement_of(lm.model), fused=fused_layers(lm))


def layer_windows(cfg) -> list[int | None]:
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * cfg.num_hidden_layers


def embed_tokens(parts: Parts, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The embeddings of ids, on the device of the positions (where the RoPE tables are computed).

    Under a device_map the table may sit on another device than the map names for it (a table tied to
    lm_head stays on lm_head's GPU), and accelerate's hook would move ids to the named one: the
    module's own forward, under the hook, runs where the table is."""
    forward = getattr(parts.embed, "_old_forward", parts.embed.forward)
    return forward(ids.to(parts.placement.embed)).to(device)


def rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm as one fused kernel (its module spends six), with its own weight and eps."""
    return fused_norm.rms_norm(x, norm.weight, norm_eps(norm))


def add_rms_norm(norm: torch.nn.Module, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + y, the model's RMSNorm of it): a residual add and the norm that reads it."""
    return fused_norm.add_rms_norm(h, y, norm.weight, norm_eps(norm))


def norm_eps(norm: torch.nn.Module) -> float:
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def final_logits(parts: Parts, h: torch.Tensor) -> torch.Tensor:
    """lm_head(norm(h)) for the last layer's output h [B, T, C], each on its own device (a device_map
    may put the final norm and lm_head, tied to the embeddings, on different GPUs)."""
    x = rms_norm(parts.norm, h.to(parts.placement.norm))
    return parts.lm_head(x.to(parts.placement.head))


def project_qkv(attn, x: torch.Tensor, head_dim: int, fused: Fused | None = None, heads: LayerHeads | None = None):
    """q [B, H, T, D], k and v [B, H_kv, T, D]; q/k norms (Qwen3) on the head dim before RoPE. fused: the
    three projections as one matmul (fused_weights.py). heads: only the heads that attend when some KV
    groups are recurrences (their projections are computed and dropped: simpler than slicing weights)."""
    B, T, _ = x.shape
    if fused is not None and heads is not None:
        # the kept heads of q, k and v in one gather over the fused output, where three took ~4 us a layer
        # at batch 1 on the 7B shape (step_graph_time_7b_1k_modes.json); a norm's weight is the same for
        # every head, so selecting before it changes nothing
        kept = fused.output(x).view(B, T, -1, head_dim).index_select(2, heads.qkv)
        q, k, v = kept.split((heads.q.shape[0], heads.kv.shape[0], heads.kv.shape[0]), dim=2)
    else:
        q, k, v = fused(x) if fused is not None else (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x))
        q, k, v = (t.reshape(B, T, -1, head_dim) for t in (q, k, v))
        if heads is not None:  # index_select, not q[:, :, heads.q]: see recurrent_groups.merge_recurrent
            q, k, v = q.index_select(2, heads.q), k.index_select(2, heads.kv), v.index_select(2, heads.kv)
    return heads_first(attn, q, k, v)


def heads_first(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """q, k, v [B, T, heads, D] -> [B, heads, T, D], q/k norms (Qwen3) applied on the head dim."""
    if hasattr(attn, "q_norm"):
        q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def rope_tables(rotary: torch.nn.Module, h: torch.Tensor, positions: torch.Tensor):
    """(cos, signed sin) [B, 1, T, D] at the given positions, on h's device, shared by every layer of a
    step that sits on that device.

    The model's rotary module computes cos and sin (its scaling types included); the sign of sin's
    first half is folded in once so that applying RoPE needs no negation. Under a device_map the module
    may sit on another device and accelerate's hook return its tables there: they come back to h's.
    """
    cos, sin = rotary(h, positions.clamp(min=0))
    cos, sin = cos.to(h.device), sin.to(h.device)
    half = sin.shape[-1] // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return cos[:, None], signed[:, None]


def apply_rope(x: torch.Tensor, rope) -> torch.Tensor:
    """x [B, H, T, D] rotated: x cos + rotate_half(x) sin, with rotate_half(x) = swapped halves * sign.

    The halves are swapped with a cat, not x.roll: torch's roll kernel took ~40 us for one decode
    step's queries at batch 120 (Llama-2-13B shape, H200), 80 calls a step.
    """
    cos, signed_sin = rope
    half = x.shape[-1] // 2
    return x * cos + torch.cat((x[..., half:], x[..., :half]), dim=-1) * signed_sin


def attention_scale(parts: Parts, idx: int) -> float:
    """The layer's softmax scale: the module's own when it has one (Qwen3 and others set it)."""
    return getattr(parts.layers[idx].self_attn, "scaling", parts.head_dim ** -0.5)


def project(parts: Parts, idx: int, x: torch.Tensor, rope, heads: LayerHeads | None = None):
    """(q [B, H_attn, T, D], k, v [B, H_kv_cached, T, D]) of a layer's normed input x [B, T, C], RoPE
    applied to q and k (rope None: not yet, kernels/rope_write.py does it with the cache write); only the
    heads that attend when some KV groups are recurrences."""
    fusion = parts.fusion(idx)
    q, k, v = project_qkv(parts.layers[idx].self_attn, x, parts.head_dim, fusion and fusion.qkv, heads)
    return with_rope(q, k, v, rope)


def with_rope(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope):
    return (q, k, v) if rope is None else (apply_rope(q, rope), apply_rope(k, rope), v)


def pre_attention(parts: Parts, idx: int, h: torch.Tensor, rope, heads: LayerHeads | None,
                  joint: JointProjection | None = None):
    """A layer's work before attention: (x, q, k, v), x the input_layernorm output [B, T, C]; with the
    layer's joint projection, the replaced groups' projection [B, T, W] in x's place (what they read)."""
    x = rms_norm(parts.layers[idx].input_layernorm, h)
    if joint is None:
        return (x, *project(parts, idx, x, rope, heads))
    q, k, v, proj = joint(x)
    return (proj, *with_rope(*heads_first(parts.layers[idx].self_attn, q, k, v), rope))


# A prefill's MLP runs over this many tokens at a time: its intermediates, ~2.7x as wide as h for gate and up
# each, are a long prefill's largest tensors (Table 1: ~1.8 GB each at 130 x 512 tokens of the 13B shape), and
# they bound the largest batch beside the KV. The MLP works token by token, so the chunks change no value.
MLP_CHUNK_TOKENS = 8192


def post_attention(parts: Parts, idx: int, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A layer's work after attention: o_proj of out [B, H, T, D], residual, MLP, residual."""
    layer = parts.layers[idx]
    B, T = h.shape[:2]
    attended = layer.self_attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))
    h, x = add_rms_norm(layer.post_attention_layernorm, h, attended)
    if B * T <= MLP_CHUNK_TOKENS:
        return h + mlp(parts, idx, x)
    chunks = x.reshape(B * T, -1).split(MLP_CHUNK_TOKENS)
    return h + torch.cat([mlp(parts, idx, chunk) for chunk in chunks]).view_as(h)


def mlp(parts: Parts, idx: int, x: torch.Tensor) -> torch.Tensor:
    """Layer idx's MLP of x (its post-attention norm's output): gate and up as one matmul where fused."""
    layer, fusion = parts.layers[idx], parts.fusion(idx)
    if fusion is None or fusion.gate_up is None:
        return layer.mlp(x)
    if fusion.silu:
        return layer.mlp.down_proj(silu_mul(fusion.gate_up.output(x)))
    gate, up = fusion.gate_up(x)
    return layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)


class EagerStages:
    """A layer's fixed-shape parts for one request's model, run as they are called: pre_attention, and
    after attention the replaced groups' recurrences, their merge and post_attention. A decode step may
    use a DecodeGraphs (graphs.py) instead, which replays the same two as CUDA graphs."""

    def __init__(self, parts: Parts, heads: list):
        self.parts, self.heads = parts, heads
        self.joints = [joint_projection(parts.fusion(i) and parts.fusion(i).qkv, lh, parts.head_dim)
                       for i, lh in enumerate(heads)]

    def pre(self, idx: int, h: torch.Tensor, rope):
        return pre_attention(self.parts, idx, h, rope, self.heads[idx], self.joints[idx])

    def recurrent(self, idx: int, x: torch.Tensor, pos: torch.Tensor, states: dict, phase: str,
                  into: torch.Tensor | None = None) -> dict:
        """x: what pre gave, the layer's normed input, or its stack's projection with a joint projection
        (whose decode step then writes its heads into `into`, the o_proj input, where given)."""
        return run_groups(self.heads[idx], x, pos, states, phase, self.joints[idx] is not None, into)

    def o_proj_input(self, x: torch.Tensor) -> torch.Tensor:
        """An empty o_proj input [B, H, 1, D] for a decode step of x [B, 1, C]: every head's output goes in it."""
        return x.new_empty(x.shape[0], self.parts.num_heads, 1, self.parts.head_dim)

    def recurrences_beside(self, idx: int, x: torch.Tensor, pos: torch.Tensor, states: dict,
                           side: side_stream.SideStream) -> Beside | None:
        """A decode step's recurrences of layer idx started before its attention, on `side`
        (recurrent_groups.Beside), for after_attention(beside=); None where after_attention runs them
        itself (no joint projection, or side_stream.BESIDE off). For a step that is one graph
        (step_graphs.py): in a layer's own post-attention graph (graphs.py) no attention runs beside."""
        if self.joints[idx] is None or not side_stream.BESIDE:
            return None
        full = self.o_proj_input(x)
        side.run(lambda: self.recurrent(idx, x, pos, states, "decode", full))
        return Beside(full, self.heads[idx].q, side)

    def after_attention(self, idx: int, h: torch.Tensor, out: torch.Tensor | None, x: torch.Tensor,
                        pos: torch.Tensor, states: dict, phase: str, beside: Beside | None = None) -> torch.Tensor:
        """The next hidden state from the attention heads' output `out` (None: every group replaced):
        the replaced groups' recurrences over x (their `states` move on in place), their output merged
        with out into the o_proj layout, then post_attention. One stage, so that a decode step's graph
        holds all of it: the recurrences need x, pos and their states, nothing from attention.
        beside: the recurrences already started (recurrences_beside); only the merge is left, or nothing
        where attention wrote its heads into beside.full (attention(into=))."""
        heads = self.heads[idx]
        if beside is not None:
            out = beside.merged(out)
        elif heads is not None:
            full = None
            if self.joints[idx] is not None and phase == "decode":  # the stack writes its heads into it
                full = self.o_proj_input(x)
            ys = self.recurrent(idx, x, pos, states, phase, full)
            out = merge_recurrent(out, heads, ys, self.parts.num_heads, full)
        return post_attention(self.parts, idx, h, out)


def layer_forward(stages, idx: int, h: torch.Tensor, pos: torch.Tensor, rope, cache=None,
                  states: dict | None = None, phase: str = "prefill", valid: list[int] | None = None,
                  decode_kernel: bool = True, newest: tuple | None = None):
    """One decoder layer: attention, the replaced groups' recurrences, then the MLP. Returns (h, q).

    h [B, T, C], pos [B, T]; q [B, H_attn, T, D] after RoPE (the heads that attend). `stages`
    (EagerStages, or graphs.DecodeGraphs) runs the fixed-shape parts. With a LayerCache `cache`, the
    new keys (valid[b] real ones per row) join it and attention runs over all it holds; without one,
    over the call's own keys, causally. `states` {group: state} of the recurrences moves on in place.
    decode_kernel: whether a decode step on CUDA may use the Triton kernel (attention.py); newest: where a
    decode step also writes its heads' logits over the newest slots and their log-sum-exp (attention.py, a
    policy's rows).
    """
    parts = stages.parts
    x, q, k, v = stages.pre(idx, h, rope)
    keys, values, k_pos, holes = k, v, pos, False
    if cache is not None:
        cache.append(k, v, pos, valid)
        (keys, values, k_pos), holes = cache.view(), cache.has_holes
    out = None
    if keys.shape[1] > 0:
        out = attention(q, keys, values, pos, k_pos, scale=attention_scale(parts, idx), holes=holes,
                        window=parts.windows[idx], causal_square=phase == "prefill", decode_kernel=decode_kernel,
                        newest=newest)
    h = stages.after_attention(idx, h, out, x, pos, {} if states is None else states, phase)
    return h, q
