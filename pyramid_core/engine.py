"""The decoder loop: prefill and decode over a Hugging Face model's own modules.

Why our own loop (DESIGN.md section 2): PyramidInfer passes fewer tokens to deeper layers during
prefill, keeps a different number of tokens in each layer and keeps each token's original RoPE
position; RecurFormer removes head groups from some layers. Stock `LlamaModel.forward` shares one mask
and one set of position embeddings across layers, so we drive the modules ourselves and depend only on
their attributes (embed_tokens, layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj, q_norm, k_norm,
post_attention_layernorm, mlp}, norm, rotary_emb, lm_head), which Llama, Mistral, Qwen2 and Qwen3 share.

`generate` is a Python generator yielding one `StepRecord` per step; the app and the CLI iterate it.
Everything per request (the cache, the policy's counters, the random generator) is made inside the
call, so one loaded model and one policy object serve many requests.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .cache import KVCache, RecentQueries, right_aligned_index
from .graphs import DecodeGraphs, GraphStore
from .kernels.decode import kernel_fits as decode_kernel_fits
from .kernels.scores import attention_probs, recent_attention_scores
from .models import LoadedModel
from .policies.base import LayerContext, Policy, to_device
from .policies.full import FullPolicy
from .trace import LayerAttention, StepRecord

log = logging.getLogger(__name__)

PREFILL_RECORD_QUERIES = 32  # prompt tokens whose mean attention the prefill record shows

# SDPA without cuDNN: cuDNN builds an execution plan for every new shape (tens of ms on an H200), and
# here every decode step and every compressed layer brings a new key length. Measured 2026-11-26 on an
# H200: a first decode at a new length took ~35 ms per layer with cuDNN; flash/efficient need no plan.
# torch keeps this choice process-wide while a step runs; concurrent requests only ever set the same.
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class Sampling:
    """temperature 0 means greedy (argmax); otherwise softmax(logits / T) restricted to the top-p mass."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"temperature must be in [0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


# ----------------------------------------------------------------------------- model pieces

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


def model_parts(lm: LoadedModel) -> Parts:
    cfg, base = lm.config, lm.model.model
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Parts(embed=base.embed_tokens, layers=base.layers, norm=base.norm, lm_head=lm.model.lm_head,
                 rotary=base.rotary_emb, head_dim=head_dim, num_heads=cfg.num_attention_heads,
                 num_kv_heads=cfg.num_key_value_heads, windows=layer_windows(cfg))


def layer_windows(cfg) -> list[int | None]:
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * cfg.num_hidden_layers


def rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm as one fused kernel (its module spends six), with its own weight and eps."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)


def project_qkv(attn, x: torch.Tensor, head_dim: int):
    """q [B, H, T, D], k and v [B, H_kv, T, D]; q/k norms (Qwen3) on the head dim before RoPE."""
    B, T, _ = x.shape
    q = attn.q_proj(x).view(B, T, -1, head_dim)
    k = attn.k_proj(x).view(B, T, -1, head_dim)
    v = attn.v_proj(x).view(B, T, -1, head_dim)
    if hasattr(attn, "q_norm"):
        q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def rope_tables(rotary: torch.nn.Module, h: torch.Tensor, positions: torch.Tensor):
    """(cos, signed sin) [B, 1, T, D] at the given positions, shared by every layer of a step.

    The model's rotary module computes cos and sin (its scaling types included); the sign of sin's
    first half is folded in once so that applying RoPE needs no negation.
    """
    cos, sin = rotary(h, positions.clamp(min=0))
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


def attention(q, k, v, q_pos, k_pos, *, scale: float, holes: bool, window: int | None,
              causal_square: bool) -> torch.Tensor:
    """SDPA over held slots, masked by original positions. q [B, H, Tq, D]; k, v [B, H_kv, Tk, D].

    Without holes or a sliding window the mask is implied: a square prefill block is causal (kept
    tokens stay in order) and a single decode query sees every slot; then SDPA runs its fused kernels.
    A decode step on CUDA runs the Triton decode kernel instead (kernels/decode_triton.py; this SDPA
    path is its reference).
    """
    if decode_kernel_fits(q, k):
        from .kernels.decode_triton import decode_attention_triton

        return decode_attention_triton(q, k, v, q_pos, k_pos, scale, window)
    gqa = q.shape[1] != k.shape[1]
    if not holes and window is None and (causal_square or q.shape[2] == 1):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal_square and q.shape[2] > 1,
                                              scale=scale, enable_gqa=gqa)
    mask = (k_pos[:, None, :] >= 0) & (k_pos[:, None, :] <= q_pos[:, :, None])  # [B, Tq, Tk]
    if window is not None:
        mask &= k_pos[:, None, :] > q_pos[:, :, None] - window
    mask |= (q_pos < 0)[:, :, None]  # an empty query slot attends anywhere; nobody reads its output
    if gqa and q.is_cuda:  # fused SDPA kernels with a mask want equal head counts
        group = q.shape[1] // k.shape[1]
        k, v, gqa = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=gqa)


# ----------------------------------------------------------------------------- one layer

@dataclass
class Request:
    """Per-request state the loop threads through the layers."""

    cache: KVCache
    policy: Policy
    seen: list[int]          # tokens seen per row (real prompt + generated)
    phase: str
    record_attention: bool
    heads: list              # per layer: LayerHeads when some KV groups are recurrences, else None
    policy_info: dict        # the policy's describe(), taken once per request
    stages: EagerStages | None = None  # the layers' fixed-shape parts, run eagerly
    graphs: GraphStore | None = None   # where decode steps find their CUDA graphs; None: eager decoding


@dataclass
class LayerHeads:
    """Which heads of a layer stay attention heads when some KV groups run as recurrences (RecurFormer)."""

    q: torch.Tensor          # indices of the query heads that attend
    kv: torch.Tensor         # indices of the KV heads that are cached
    modules: dict            # {kv_group: module} of the replaced groups
    group_size: int          # query heads per KV group
    cached: tuple            # the cached KV heads, on the host


def layer_heads(parts: Parts, recurrent: dict, device) -> list[LayerHeads | None]:
    G = parts.num_heads // parts.num_kv_heads
    out = []
    for idx in range(len(parts.layers)):
        replaced = recurrent.get(idx, {})
        if not replaced:
            out.append(None)
            continue
        kv = [g for g in range(parts.num_kv_heads) if g not in replaced]
        q = [h for h in range(parts.num_heads) if h // G not in replaced]
        out.append(LayerHeads(torch.tensor(q, dtype=torch.long, device=device),
                              torch.tensor(kv, dtype=torch.long, device=device), replaced, G, tuple(kv)))
    return out


def pre_attention(parts: Parts, idx: int, h: torch.Tensor, rope, heads: LayerHeads | None):
    """A layer's work before attention: (x, q, k, v), x the input_layernorm output [B, T, C], q [B, H_attn,
    T, D] and k, v [B, H_kv_cached, T, D] with RoPE applied to q and k."""
    attn = parts.layers[idx].self_attn
    x = rms_norm(parts.layers[idx].input_layernorm, h)
    q, k, v = project_qkv(attn, x, parts.head_dim)
    if heads is not None:  # projections of replaced heads are computed and dropped: simpler than slicing weights
        q, k, v = q[:, heads.q], k[:, heads.kv], v[:, heads.kv]
    return x, apply_rope(q, rope), apply_rope(k, rope), v


def post_attention(parts: Parts, idx: int, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A layer's work after attention: o_proj of out [B, H, T, D], residual, MLP, residual."""
    layer = parts.layers[idx]
    B, T = h.shape[:2]
    h = h + layer.self_attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))
    return h + layer.mlp(rms_norm(layer.post_attention_layernorm, h))


class EagerStages:
    """A layer's fixed-shape parts for one request's model, run as they are called: pre_attention,
    the replaced groups' recurrences and post_attention. A decode step may use a DecodeGraphs (graphs.py)
    instead, which replays the same three functions as CUDA graphs."""

    def __init__(self, parts: Parts, heads: list):
        self.parts, self.heads = parts, heads

    def pre(self, idx: int, h: torch.Tensor, rope):
        return pre_attention(self.parts, idx, h, rope, self.heads[idx])

    def recurrent(self, idx: int, x: torch.Tensor, pos: torch.Tensor, states: dict, phase: str) -> dict:
        return run_groups(self.heads[idx], x, pos, states, phase)

    def post(self, idx: int, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return post_attention(self.parts, idx, h, out)


def run_layer(parts: Parts, idx: int, h: torch.Tensor, pos: torch.Tensor, rope, req: Request,
              valid_counts: list[int], stages) -> tuple[torch.Tensor, torch.Tensor, LayerAttention | None]:
    """One decoder layer on the slots it receives: attention over its cache, then the MLP.

    h [B, T, C], pos [B, T]. Returns (h, q) with q [B, H_attn, T, D] after RoPE (the heads that attend),
    and the first row's attention record when asked for. `stages` runs the fixed-shape parts.
    """
    cache, heads = req.cache[idx], req.heads[idx]
    x, q, k, v = stages.pre(idx, h, rope)
    cache.append(k, v, pos, valid_counts)
    keys, values, k_pos = cache.view()
    scale = attention_scale(parts, idx)
    out, record = None, None
    if keys.shape[1] > 0:
        out = attention(q, keys, values, pos, k_pos, scale=scale, holes=cache.has_holes,
                        window=parts.windows[idx], causal_square=req.phase == "prefill")
        if req.record_attention:
            record = attention_record(idx, q, pos, keys, k_pos, scale)
    if heads is not None:
        ys = stages.recurrent(idx, x, pos, req.cache.recurrent_state[idx], req.phase)
        out = merge_recurrent(out, heads, ys, parts.num_heads)
    return stages.post(idx, h, out), q, record


def attention_scale(parts: Parts, idx: int) -> float:
    """The layer's softmax scale: the module's own when it has one (Qwen3 and others set it)."""
    return getattr(parts.layers[idx].self_attn, "scaling", parts.head_dim ** -0.5)


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


def attention_record(idx: int, q, q_pos, keys, k_pos, scale) -> LayerAttention:
    """The first row's per-head attention of its last few queries over the slots it holds."""
    n = min(PREFILL_RECORD_QUERIES, q.shape[2])
    probs = attention_probs(q[:1, :, -n:], q_pos[:1, -n:], keys[:1], k_pos[:1], scale)[0]  # [H, n, T]
    voters = (q_pos[0, -n:] >= 0)
    mean = (probs * voters[None, :, None]).sum(1) / voters.sum().clamp(min=1)
    held = k_pos[0] >= 0
    return LayerAttention(layer=idx, positions=k_pos[0][held].tolist(),
                          weights=mean[:, held].tolist(), num_queries=int(voters.sum()))


def score_fn(queries: torch.Tensor, q_pos: torch.Tensor, keys: torch.Tensor, k_pos: torch.Tensor,
             scale: float):
    """Bind a layer's recent queries and keys into the policies' scores(window, distance_weight)."""

    def scores(window: list[int], distance_weight: float) -> torch.Tensor:
        width = max(window)
        weights = torch.zeros(len(window), width)
        for row, w in enumerate(window):
            if w > 0:
                weights[row, width - w:] = torch.linspace(1.0, distance_weight, w)
        return recent_attention_scores(queries[:, :, -width:], q_pos[:, -width:], keys, k_pos,
                                       to_device(weights, keys.device), scale)

    return scores


def remember_queries(req: Request, idx: int, q: torch.Tensor, pos: torch.Tensor):
    """Keep the last few queries of the layer when the policy scores with them at decode time.

    Returns the (queries, positions) a decode-time policy scores with: the stored window, or the
    step's own when the policy keeps none.
    """
    width = req.policy.query_window(max(req.seen))
    if width <= 0:
        return q, pos
    stored = req.cache.recent_queries[idx]
    if stored is not None and req.phase == "decode":
        stored.append(q, pos, width)
    else:  # copied in: a view would keep the whole prompt's queries of every layer alive
        stored = req.cache.recent_queries[idx] = RecentQueries(q[:, :, -width:], pos[:, -width:])
    return stored.view(width)


def ask_policy(parts: Parts, idx: int, req: Request, queries, q_pos):
    """The policy's answer for layer idx, given the queries it may score with. None for a layer that
    caches nothing (every KV group replaced by a recurrence)."""
    layer = req.cache[idx]
    keys, _, k_pos = layer.view()
    if keys.shape[1] == 0:
        return None
    scale = attention_scale(parts, idx)
    ctx = LayerContext(idx, len(parts.layers), req.phase, k_pos, list(layer.counts), req.seen,
                       req.cache.policy_state[idx], req.cache.shared_state,
                       score_fn(queries, q_pos, keys, k_pos, scale))
    return req.policy.prefill(ctx) if req.phase == "prefill" else req.policy.decode(ctx)


# ----------------------------------------------------------------------------- prefill and decode

@sdpa_kernel(ATTENTION_BACKENDS)
def prefill(parts: Parts, input_ids: torch.Tensor, positions: torch.Tensor, req: Request):
    """Run the prompt through every layer. Returns (last-token logits [B, V], attention records)."""
    h = parts.embed(input_ids)
    pos = positions
    rope = rope_tables(parts.rotary, h, pos)
    valid = (pos >= 0).sum(1).tolist()
    records = []
    for idx in range(len(parts.layers)):
        h, q, record = run_layer(parts, idx, h, pos, rope, req, valid, req.stages)
        records.append(record)
        keep = ask_policy(parts, idx, req, q, pos)
        remember_queries(req, idx, q, pos)
        if keep is not None and keep.cache is not None:
            req.cache[idx].keep(keep.cache, keep.cache_counts, keep.kept_before)
        if keep is not None and keep.stream is not None:
            h, pos, valid = keep_stream(h, pos, keep.stream)
            rope = rope_tables(parts.rotary, h, pos)
    logits = parts.lm_head(rms_norm(parts.norm, h[:, -1:]))[:, 0]
    return logits.float(), records


def keep_stream(h: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor):
    """Pass on only the kept tokens' hidden states, right-aligned like the cache."""
    keep = keep & (pos >= 0)
    counts = keep.sum(1).tolist()
    index = right_aligned_index(keep, max(counts))
    h = h.gather(1, index[:, :, None].expand(-1, -1, h.shape[-1]))
    pos = pos.gather(1, index).masked_fill(~keep.gather(1, index), -1)
    return h, pos, counts


@sdpa_kernel(ATTENTION_BACKENDS)
def decode_step(parts: Parts, tokens: torch.Tensor, positions: torch.Tensor, req: Request):
    """One new token per row through every layer. tokens, positions [B]. Returns logits [B, V]."""
    h = parts.embed(tokens[:, None])
    pos = positions[:, None]
    rope = rope_tables(parts.rotary, h, pos)
    ones = [1] * tokens.shape[0]
    records = []
    graphs = decode_graphs(parts, req, tokens.shape[0])
    if graphs is not None and not graphs.lock.acquire(blocking=False):
        graphs = None  # another request is replaying them: this one runs eagerly
    try:
        for idx in range(len(parts.layers)):
            h, q, record = run_layer(parts, idx, h, pos, rope, req, ones, graphs or req.stages)
            records.append(record)
            keep = ask_policy(parts, idx, req, *remember_queries(req, idx, q, pos))
            if keep is not None and keep.cache is not None:
                req.cache[idx].keep(keep.cache, keep.cache_counts, keep.kept_before)
        logits = parts.lm_head(rms_norm(parts.norm, h))[:, 0]
    finally:
        if graphs is not None:
            graphs.lock.release()
    return logits.float(), records


def decode_graphs(parts: Parts, req: Request, batch: int) -> DecodeGraphs | None:
    """The CUDA graphs for this request's decode steps (captured at its first step), or None."""
    if req.graphs is None:
        return None
    # the graphs bind the replaced groups' modules too: another adapter of the same shape needs its own
    key = (batch, tuple(None if lh is None else (lh.cached, tuple((g, id(m)) for g, m in lh.modules.items()))
                        for lh in req.heads))
    dtype, device = parts.embed.weight.dtype, parts.embed.weight.device
    return req.graphs.get(key, lambda: DecodeGraphs(req.stages, len(parts.layers), batch, parts.embed.weight.shape[1],
                                                    parts.num_heads, parts.head_dim, dtype, device,
                                                    req.cache.recurrent_state))


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from logits [B, V]."""
    if sampling.temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p  # keep the token that crosses p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ----------------------------------------------------------------------------- generate

def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Original positions [B, T]: 0.. over each row's real tokens, -1 on left padding."""
    if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
        raise ValueError("prompts must be left-padded (attention_mask 0s only before the 1s)")
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, -1)


def generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             policy: Policy | None = None, max_new_tokens: int = 64, sampling: Sampling | None = None,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             record_attention: bool | Callable[[int], bool] = False,
             record_positions: bool | Callable[[int], bool] = False,
             stop: threading.Event | None = None, cuda_graphs: bool | None = None) -> Iterator[StepRecord]:
    """Generate from left-padded prompts input_ids [B, T], yielding a StepRecord per step.

    Step 0 is the prefill (its token is the first generated one). Rows that produced EOS then emit
    pad_token_id, like transformers' generate; the loop ends when every row has finished, after
    max_new_tokens tokens, or when `stop` is set.

    record_attention / record_positions: whether records carry the first row's attention and kept
    positions; a callable is asked at each step (step -> bool), so a live view pays only for the steps
    it will draw. The prefill record always carries kept positions.

    cuda_graphs: decode steps replay CUDA graphs of each layer's fixed-shape parts (graphs.py). None
    (default) uses them on a GPU; True also on a CPU, where they are plain calls (for tests); False never.
    """
    sampling = sampling or Sampling()
    input_ids, attention_mask = check_inputs(lm, input_ids, attention_mask, max_new_tokens)
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    parts, req, positions = start_request(lm, input_ids, attention_mask, policy)
    if cuda_graphs or (cuda_graphs is None and input_ids.device.type == "cuda"):
        req.graphs = lm.decode_graphs
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(sampling.seed)
    yield from _generate_steps(parts, req, input_ids, positions, max_new_tokens, sampling, generator,
                               eos, pad, _per_step(record_attention), _per_step(record_positions), stop)


def _per_step(flag) -> Callable[[int], bool]:
    return flag if callable(flag) else (lambda step: bool(flag))


@torch.inference_mode()  # on a generator, torch enters and leaves the mode around each step
def _generate_steps(parts, req, input_ids, positions, max_new_tokens, sampling, generator, eos, pad,
                    record_attention, record_positions, stop):
    cache, B = req.cache, input_ids.shape[0]
    finished = [False] * B
    next_pos = positions[:, -1] + 1
    tokens = None  # the tokens sampled at the previous step, fed to the next decode step
    for step in range(max_new_tokens):
        start = time.perf_counter()
        req.record_attention = record_attention(step)
        if step == 0:
            logits, attn = prefill(parts, input_ids, positions, req)
            req.phase = "decode"
        else:
            req.seen = [s + 1 for s in req.seen]
            logits, attn = decode_step(parts, tokens, next_pos, req)
            next_pos = next_pos + 1
        tokens = sample(logits, sampling, generator)
        ids = tokens.tolist()  # waits for the GPU: the step time below is real
        ids = [pad if done else t for t, done in zip(ids, finished)]
        tokens = torch.tensor(ids, device=input_ids.device)
        finished = [done or t in eos for t, done in zip(ids, finished)]
        if step == max_new_tokens - 1:
            finished = [True] * B
        yield make_record(step, ids, finished, cache, time.perf_counter() - start, req, attn,
                          record_positions(step) or step == 0)
        if all(finished) or (stop is not None and stop.is_set()):
            return


def start_request(lm: LoadedModel, input_ids, attention_mask, policy: Policy | None):
    """The model's parts, a fresh per-request state and the prompt's positions."""
    parts = model_parts(lm)
    policy = policy or FullPolicy()
    heads = layer_heads(parts, policy.recurrent_modules(lm), input_ids.device)
    kv_heads = [parts.num_kv_heads if lh is None else len(lh.kv) for lh in heads]
    cache = KVCache(len(parts.layers), input_ids.shape[0], kv_heads, parts.head_dim, lm.dtype, input_ids.device)
    req = Request(cache, policy, attention_mask.sum(1).tolist(), "prefill", False, heads, policy.describe(),
                  EagerStages(parts, heads))
    return parts, req, prompt_positions(attention_mask)


def teacher_forced_logits(lm: LoadedModel, input_ids: torch.Tensor, forced_ids: torch.Tensor,
                          policy: Policy | None = None, attention_mask: torch.Tensor | None = None):
    """Logits [B, 1 + n, V] (float32): after the prefill, then after feeding each of forced_ids [B, n].

    The prompt is prefilled with the policy's compression and the forced tokens go through decode
    steps, so the policy also acts during the continuation: this is what a continuation's perplexity
    after a compressed context is computed from (evaluate.py).
    """
    input_ids, attention_mask = check_inputs(lm, input_ids, attention_mask, 1)
    parts, req, positions = start_request(lm, input_ids, attention_mask, policy)
    forced_ids = forced_ids.to(input_ids.device)
    next_pos = positions[:, -1] + 1
    with torch.inference_mode():
        logits, _ = prefill(parts, input_ids, positions, req)
        out = [logits]
        req.phase = "decode"
        for i in range(forced_ids.shape[1]):
            req.seen = [s + 1 for s in req.seen]
            logits, _ = decode_step(parts, forced_ids[:, i], next_pos + i, req)
            out.append(logits)
    return torch.stack(out, dim=1)


def make_record(step, ids, finished, cache: KVCache, elapsed, req: Request, attn,
                with_positions: bool) -> StepRecord:
    per_row = cache.counts_per_row()
    return StepRecord(
        step=step, phase="prefill" if step == 0 else "decode", token_ids=ids, finished=list(finished),
        kept_tokens=per_row[0], kept_tokens_per_row=per_row, kv_bytes=cache.nbytes(),
        peak_kv_bytes=cache.update_peak(), step_time_s=elapsed, seen_tokens=req.seen[0],
        kept_positions=cache.positions_of_row(0) if with_positions else None,
        # a layer whose every KV group is a recurrence attends to nothing: it has no attention entry
        attention=[a for a in attn if a is not None] if req.record_attention else None,
        policy={**req.policy_info, **cache.shared_state.get("resolved", {})})


def check_inputs(lm: LoadedModel, input_ids, attention_mask, max_new_tokens: int):
    """Validate a request; user mistakes raise ValueError with a sentence that says what to change."""
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if input_ids.numel() == 0 or input_ids.shape[1] == 0:
        raise ValueError("the prompt is empty")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.ndim == 1:
        attention_mask = attention_mask[None]
    if (attention_mask.sum(1) == 0).any():
        raise ValueError("a prompt in the batch is empty")
    longest = int(attention_mask.sum(1).max())
    if longest > lm.max_context:
        raise ValueError(f"the prompt has {longest} tokens, more than the model's context of {lm.max_context}")
    if not 1 <= max_new_tokens <= 1_000_000:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    return input_ids.to(lm.device), attention_mask.to(lm.device)
