"""The decoder loop: prefill and decode over a Hugging Face model's own modules (docs/design.md).

`generate` is a Python generator yielding one StepRecord per step; `teacher_forced_logits` feeds given
tokens instead of sampled ones. Both drive one stepper, `step`. Everything per request (the cache, the
policy's state, the random generator) is made inside the call, so one loaded model and one policy
object serve many requests.

The pieces live in their own files: layers.py (the model's modules and the one layer forward),
attention.py, recurrent_groups.py (RecurFormer's split and merge), policies/base.py (the policy
contract), graphs.py (CUDA graphs of decode steps), sampling.py and recording.py (trace records).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import torch
from torch.nn.attention import sdpa_kernel

from . import evict_graphs, step_graphs, warmup
from .attention import ATTENTION_BACKENDS
from .cache import KVCache, right_aligned_index, top_k_mask
from .deferred_gc import full_collections_deferred
from .graphs import DecodeGraphs, GraphStore, graph_key
from .layers import (EagerStages, Parts, attention_scale, embed_tokens, final_logits, layer_forward, model_parts,
                     rope_tables)
from .models import LoadedModel
from .placement import follow
from .policies.base import Evict, Keep, LayerContext, Policy, PolicyState, Window
from .policies.full import FullPolicy
from .recording import CacheState, attention_record, cache_state, step_record
from .recurrent_groups import layer_heads
from .sampling import Sampling, sample
from .trace import StepRecord

__all__ = ["ATTENTION_BACKENDS", "Sampling", "generate", "teacher_forced_logits"]

log = logging.getLogger(__name__)

# A step's attention detail wanted only if it is the last (generate's detail_last): whether it is, EOS or a
# stop tells only after it ran, so its layers leave their records to be made then (see eager_decode_step).
IF_LAST = "if last"


@dataclass
class Request:
    """Per-request state the loop threads through the layers."""

    parts: Parts
    cache: KVCache
    policy: Policy
    state: PolicyState       # the policy's own, made by policy.new_state
    stages: EagerStages      # the layers' fixed-shape parts, run eagerly
    seen: list[int]          # tokens seen per row (real prompt + generated)
    positions: torch.Tensor  # the prompt's [B, T] until the prefill, then the next token's [B]
    policy_info: dict        # the policy's describe(), taken once per request
    phase: str = "prefill"
    record_attention: bool | str = False  # True, False, or IF_LAST: only if this step turns out the last
    graphs: GraphStore | None = None  # where decode steps find their CUDA graphs; None: eager decoding
    decode_kernel: bool = True        # decode attention may use the Triton kernel (attention.py)
    evict_graphs: dict = field(default_factory=dict)  # layer -> its whole steady step (evict_graphs.py)
    graph_pool: object = None         # the CUDA memory pool of its own graphs (evict and step graphs)
    step_graph: object = None         # the whole decode step as one graph (step_graphs.py)
    ahead: bool = False               # decode steps run one step ahead (decodes_ahead)

    def describe_policy(self) -> dict:
        return {**self.policy_info, **self.state.resolved()}


def start_request(lm: LoadedModel, input_ids, attention_mask, policy: Policy | None,
                  reserve: int | None = None) -> Request:
    """A fresh per-request state for left-padded prompts. reserve: the request's new tokens, for which
    each layer's cache reserves slots after its prefill as the policy plans them (cache.py; before it when
    the policy keeps the whole prompt); None: buffers grow in blocks."""
    parts = model_parts(lm)
    policy = policy or FullPolicy()
    devices = list(parts.placement.layers)  # each layer's cache and head indices live on its device
    heads = layer_heads(parts.num_layers, parts.num_heads, parts.num_kv_heads, policy.recurrent_modules(lm),
                        devices)
    kv_heads = [parts.num_kv_heads if lh is None else len(lh.kv) for lh in heads]
    seen = attention_mask.sum(1).tolist()
    growth = None if reserve is None else policy.planned_growth(seen, reserve, parts.num_layers)
    if growth is not None:  # a layer with no KV group left is never asked, so never cut: it counts every token
        growth = [reserve if kv == 0 else g for g, kv in zip(growth, kv_heads)]
    cache = KVCache(parts.num_layers, input_ids.shape[0], kv_heads, parts.head_dim, lm.dtype, devices,
                    reserve=growth)
    if reserve is not None and policy.keeps_the_prompt:
        cache.presize(input_ids.shape[1])
    state = policy.new_state(parts.num_layers)
    state.new_tokens = reserve
    return Request(parts, cache, policy, state, EagerStages(parts, heads), seen, prompt_positions(attention_mask),
                   policy.describe())


# ----------------------------------------------------------------------------- one step

def step(req: Request, tokens: torch.Tensor):
    """One engine step: the prefill of the prompt tokens [B, T] first, then one token per row [B].
    Returns (logits [B, V] float32, per-layer attention records or None)."""
    if req.phase == "prefill":
        out = prefill(req, tokens)
        req.phase, req.positions = "decode", req.positions[:, -1] + 1
        return out
    req.seen = [s + 1 for s in req.seen]
    out = decode_step(req, tokens)
    req.positions = req.positions + 1
    return out


@sdpa_kernel(ATTENTION_BACKENDS)
def prefill(req: Request, input_ids: torch.Tensor):
    """Run the prompt through every layer; a policy may pass fewer tokens on to the next layer."""
    parts, pos = req.parts, req.positions
    h = embed_tokens(parts, input_ids, pos.device)
    rope = rope_tables(parts.rotary, h, pos)
    valid = (pos >= 0).sum(1).tolist()
    records = []
    for idx in range(parts.num_layers):
        h, pos, rope = follow(parts.placement.layers[idx], h, pos, rope)
        h, q = layer_forward(req.stages, idx, h, pos, rope, req.cache[idx], req.cache.recurrent_state[idx],
                             "prefill", valid)
        records.append(record_layer(req, idx, q, pos))
        keep = ask_policy(req, idx, q, pos)
        if keep is not None and keep.stream:
            h, pos, valid = keep_stream(h, pos, keep)
            rope = rope_tables(parts.rotary, h, pos)
        elif keep is not None:
            req.cache[idx].apply(keep)
        req.cache[idx].reserve()  # a no-op unless the request reserves its KV
    logits = final_logits(parts, h[:, -1:])[:, 0]
    return logits.float(), records


def decode_step(req: Request, tokens: torch.Tensor):
    """One new token per row, tokens [B], through every layer."""
    quiet = step_graphs.quiet_step(req)
    if quiet is not None:  # the whole step as one graph (step_graphs.py), which sets SDPA's backends itself
        return step_graphs.run(req, tokens, quiet), [None] * req.parts.num_layers
    return eager_decode_step(req, tokens)


@sdpa_kernel(ATTENTION_BACKENDS)
def eager_decode_step(req: Request, tokens: torch.Tensor):
    """decode_step layer by layer: the per-layer graphs, the eager middle and the policy's answers."""
    parts, pos = req.parts, req.positions[:, None]
    h = embed_tokens(parts, tokens[:, None], pos.device)
    rope = rope_tables(parts.rotary, h, pos)
    ones = [1] * tokens.shape[0]
    asks = req.policy.compresses_at_decode  # the baseline and prefill-only policies are never asked
    records = []
    with decode_stages(req, tokens.shape[0]) as stages:
        for idx in range(parts.num_layers):
            h, pos, rope = follow(parts.placement.layers[idx], h, pos, rope)
            states = req.cache.recurrent_state[idx]
            if asks and evict_graphs.steady(req, stages, idx):  # the whole step, the policy's part included
                h, q = evict_graphs.steady_layer(req, stages, idx, h, pos, rope, states)
                keep = None
            else:
                newest = req.policy.newest_to(req.state, idx, req.seen) if asks else None
                h, q = layer_forward(stages, idx, h, pos, rope, req.cache[idx], states, "decode", ones,
                                     req.decode_kernel, newest)
                keep = ask_policy(req, idx, q, pos) if asks else None
            # a record wanted only if the step is the last is made after it (nothing changes the layer's
            # cache until the next step), unless the policy's answer is about to move the cache's slots. A
            # graph's q is its buffer, which another request may replay over once this step lets the graphs go
            if req.record_attention == IF_LAST and (keep is None or not req.cache[idx].moves(keep)):
                records.append(partial(record_layer, req, idx, q if stages is req.stages else q.clone(), pos))
            else:
                records.append(record_layer(req, idx, q, pos))
            if keep is not None:
                req.cache[idx].apply(keep)
        logits = final_logits(parts, h)[:, 0]
    return logits.float(), records


def ask_policy(req: Request, idx: int, q: torch.Tensor, pos: torch.Tensor) -> Keep | Window | Evict | None:
    """The policy's answer for layer idx; None for a layer that caches nothing (every KV group a
    recurrence) and so has nothing to keep."""
    layer = req.cache[idx]
    if layer.keys.shape[1] == 0:
        return None
    ctx = LayerContext(idx, req.parts.num_layers, req.phase, list(layer.counts), req.seen, req.state, q, pos,
                       attention_scale(req.parts, idx), layer.held)
    return req.policy.prefill(ctx) if req.phase == "prefill" else req.policy.decode(ctx)


def keep_stream(h: torch.Tensor, pos: torch.Tensor, keep: Keep):
    """Pass on only the kept tokens' hidden states h [B, T, C], right-aligned like the cache."""
    assert keep.scores.shape == pos.shape, "a stream Keep scores every token"
    kept = top_k_mask(keep.scores, pos >= 0, keep.counts)
    index = right_aligned_index(kept, max(keep.counts))
    h = h.gather(1, index[:, :, None].expand(-1, -1, h.shape[-1]))
    pos = pos.gather(1, index).masked_fill(~kept.gather(1, index), -1)
    return h, pos, list(keep.counts)


def record_layer(req: Request, idx: int, q: torch.Tensor, pos: torch.Tensor):
    """The first row's attention record of layer idx, when this step records attention: over the slots as
    the layer attended them, also after a policy's answer that only marked some free (cache.attended)."""
    layer = req.cache[idx]
    if not req.record_attention or layer.keys.shape[1] == 0:
        return None
    keys, k_pos = layer.attended()
    return attention_record(idx, q, pos, keys, k_pos, attention_scale(req.parts, idx))


@contextmanager
def decode_stages(req: Request, batch: int):
    """The stages a decode step runs: this request's CUDA graphs (captured at its first step) when it
    uses them and no other request is replaying them, else the eager ones."""
    if req.graphs is None:
        yield req.stages
        return
    parts, weight = req.parts, req.parts.embed.weight
    graphs = req.graphs.get(graph_key(batch, req.stages.heads), lambda: DecodeGraphs(
        req.stages, parts.num_layers, batch, weight.shape[1], parts.num_heads, parts.head_dim, weight.dtype,
        weight.device, req.cache.recurrent_state))
    if not graphs.lock.acquire(blocking=False):
        if not graphs.holds(req.cache.recurrent_state):
            yield req.stages  # another request is replaying them: this one runs eagerly
            return
        graphs.lock.acquire()  # this one's recurrent states are in the graphs' buffers: wait for them
    try:
        yield graphs
    finally:
        graphs.lock.release()


# ----------------------------------------------------------------------------- generate

def generate(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             policy: Policy | None = None, max_new_tokens: int = 64, sampling: Sampling | None = None,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             record_attention: bool | Callable[[int], bool] = False,
             record_positions: bool | Callable[[int], bool] = False,
             stop: threading.Event | None = None, cuda_graphs: bool | None = None,
             decode_kernel: bool = True, detail_last: bool = False,
             reserve_kv: bool = False, ahead: bool | None = None) -> Iterator[StepRecord]:
    """Generate from left-padded prompts input_ids [B, T], yielding a StepRecord per step.

    Step 0 is the prefill (its token is the first generated one). Rows that produced EOS then emit
    pad_token_id, like transformers' generate; the loop ends when every row has finished, after
    max_new_tokens tokens, or at the first step after `stop` was set (that step is the last).

    record_attention / record_positions: whether records carry the first row's attention and kept
    positions; a callable is asked at each step (step -> bool), so a live view pays only for the steps
    it will draw. The prefill record always carries kept positions.
    detail_last: the last step's record carries attention and kept positions too, whatever was asked
    (a view of the final state); whether a step is the last (EOS, `stop`) is known only after it, so
    each step keeps what its layers' attention needs and computes it only if it was (a layer whose
    slots the policy's answer moves computes it before they move).

    cuda_graphs: decode steps replay CUDA graphs of each layer's fixed-shape parts (graphs.py). None
    (default) uses them on a GPU; True also on a CPU, where they are plain calls (for tests); False never.
    A model spread over several devices (a device_map) always decodes eagerly; see `use_graphs`.
    decode_kernel: False keeps decode attention on SDPA where the Triton kernel would run (benchmarks).
    reserve_kv: each layer's buffers are sized once for what its prefill left plus the most the policy
    will add over max_new_tokens (`Policy.planned_growth`), before the prefill when the policy keeps the
    whole prompt, and never reallocated (cache.py): the allocator cannot fragment the KV, and the
    records' kv_bytes are flat from the prefill on.
    ahead: decode one step ahead (`decodes_ahead`, `_steps_ahead`). None (default) does on a GPU where
    no record needs attention or positions; True also on a CPU (for tests); False never.
    """
    sampling = sampling or Sampling()
    input_ids, attention_mask = check_inputs(lm, input_ids, attention_mask, max_new_tokens)
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    req = start_request(lm, input_ids, attention_mask, policy, max_new_tokens if reserve_kv else None)
    req.decode_kernel = decode_kernel
    if use_graphs(req.parts, cuda_graphs, input_ids.device):
        req.graphs = lm.decode_graphs
    generator = None
    if sampling.seed is not None:  # on lm_head's device, where the logits are sampled
        generator = torch.Generator(device=req.parts.placement.head).manual_seed(sampling.seed)
    req.ahead = decodes_ahead(ahead, req.parts, input_ids.device, record_attention, record_positions, detail_last)
    yield from _generate_steps(req, input_ids, max_new_tokens, sampling, generator, eos, pad,
                               _per_step(record_attention), _per_step(record_positions), stop, detail_last)


def use_graphs(parts: Parts, asked: bool | None, device: torch.device) -> bool:
    """Whether decode steps replay CUDA graphs: as asked (None: on a GPU), and never for a model spread
    over several devices. DecodeGraphs captures every layer on one device, stream and memory pool;
    capturing per device would need per-device buffers, streams and pools and a copy at each boundary,
    and a model that needs several GPUs is not launch-bound anyway: each layer's matmuls take longer on
    the GPU than the host takes to launch them, so eager launches stay ahead of the GPU."""
    wanted = asked or (asked is None and device.type == "cuda")
    if wanted and parts.placement.spans_devices:
        log.info("the model spans %d devices: decoding without CUDA graphs", len(parts.placement.devices))
        return False
    return bool(wanted)


def decodes_ahead(asked: bool | None, parts: Parts, device: torch.device, *recording) -> bool:
    """Whether decode steps run one step ahead: as asked (None: on a GPU), and only where no record reads
    the cache after its step (attention, kept positions, the last step's detail; a callable may ask at any
    step): by the time step i's record is made, step i+1 has changed the cache. A model spread over
    several devices decodes step by step."""
    wanted = asked or (asked is None and device.type == "cuda")
    return bool(wanted) and not any(recording) and not parts.placement.spans_devices


def _per_step(flag) -> Callable[[int], bool]:
    return flag if callable(flag) else (lambda step: bool(flag))


@torch.inference_mode()  # on a generator, torch enters and leaves the mode around each step
def _generate_steps(req: Request, tokens, max_new_tokens, sampling, generator, eos, pad, record_attention,
                    record_positions, stop, detail_last):
    try:
        with full_collections_deferred():
            yield from _steps(req, tokens, max_new_tokens, sampling, generator, eos, pad, record_attention,
                              record_positions, stop, detail_last)
    finally:
        release_graphs(req)


def release_graphs(req: Request) -> None:
    """Drop the request's own graphs (step and evict graphs) once it ends or is closed: each graph's
    function refers back to the request, and through that cycle its KV and the graphs' memory pool
    would wait for Python's cycle collector instead of going when the last reference does."""
    req.step_graph, req.evict_graphs = None, {}


def _steps(req: Request, tokens, max_new_tokens, sampling, generator, eos, pad, record_attention,
           record_positions, stop, detail_last):
    finished = [False] * tokens.shape[0]
    for i in range(max_new_tokens):
        if i > 0 and req.ahead:
            yield from _steps_ahead(req, tokens, i, finished, max_new_tokens, sampling, generator, eos, pad, stop)
            return
        one_time, start = warmup.count(), time.perf_counter()
        # a stop seen before a step makes it the last, so that the last record can carry the detail
        stopping = i > 0 and stop is not None and stop.is_set()
        asked = record_attention(i)
        req.record_attention = True if asked else IF_LAST if detail_last else False
        logits, attn = step(req, tokens)
        ids = sample(logits, sampling, generator).tolist()  # waits for the GPU: the step time below is real
        ids = [pad if done else t for t, done in zip(ids, finished)]
        tokens = torch.tensor(ids, device=tokens.device)
        finished = [True] * len(ids) if i == max_new_tokens - 1 else \
            [done or t in eos for t, done in zip(ids, finished)]
        last = stopping or all(finished)
        elapsed = time.perf_counter() - start
        # a step that captured a graph or compiled a kernel is warm-up as a whole: the one-time work
        # cannot be timed apart from the step's launches, which run asynchronously around it
        warm = elapsed if warmup.count() != one_time else 0.0
        if detail_last and last and not asked:  # the detail of a last step no one asked for: view work, untimed
            attn = [a() if callable(a) else a for a in attn]
        state = cache_state(req.cache, record_positions(i) or i == 0 or (detail_last and last))
        yield step_record(i, ids, finished, state, elapsed, req.seen[0],
                          attn if asked or (detail_last and last) else None, req.describe_policy(), warm)
        if last:
            return


@dataclass
class Launched:
    """A decode step enqueued on the device: its tokens (pad for rows already finished) and which rows have
    finished after it, on the device; a copy of the tokens on its way to the host; the cache as the step
    left it."""

    tokens: torch.Tensor
    finished: torch.Tensor
    host: torch.Tensor
    copied: torch.cuda.Event | None
    state: CacheState
    seen: int
    policy: dict

    def read(self) -> list[int]:
        """The step's tokens; waits for this step only, not for the steps enqueued after it."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.host.tolist()


def _launch(req: Request, tokens, finished, sampling, generator, eos_ids, pad) -> Launched:
    logits, _ = step(req, tokens)
    sampled = torch.where(finished, pad, sample(logits, sampling, generator))
    host = torch.empty(sampled.shape, dtype=sampled.dtype, pin_memory=sampled.is_cuda)
    host.copy_(sampled, non_blocking=True)
    copied = None
    if sampled.is_cuda:
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(sampled.device))
    return Launched(sampled, finished | torch.isin(sampled, eos_ids), host, copied, cache_state(req.cache, False),
                    req.seen[0], req.describe_policy())


def _steps_ahead(req: Request, tokens, first, finished, max_new_tokens, sampling, generator, eos, pad, stop):
    """Decode steps from `first` on, each enqueued before the previous step's tokens are read back: the next
    step's tokens and finished rows are computed on the device, so the host's work between two steps (reading
    tokens, records, the caller's own) runs while the GPU computes, instead of the GPU waiting for it. A step's
    time is the time between two steps' tokens arriving; where EOS ends every row, the step enqueued after the
    last one is dropped unread."""
    device = tokens.device
    eos_ids = torch.tensor(sorted(eos), device=device, dtype=torch.long)
    ready, counted = time.perf_counter(), warmup.count()
    launched = _launch(req, tokens, torch.tensor(finished, device=device), sampling, generator, eos_ids, pad)
    for i in range(first, max_new_tokens):
        stopping = stop is not None and stop.is_set()
        final = stopping or i == max_new_tokens - 1
        following = None if final else _launch(req, launched.tokens, launched.finished, sampling, generator,
                                              eos_ids, pad)
        ids = launched.read()
        now, count = time.perf_counter(), warmup.count()
        elapsed, warm = now - ready, count != counted
        ready, counted = now, count
        finished = [True] * len(ids) if i == max_new_tokens - 1 else \
            [done or t in eos for t, done in zip(ids, finished)]
        yield step_record(i, ids, finished, launched.state, elapsed, launched.seen, None, launched.policy,
                          elapsed if warm else 0.0)
        if final or all(finished):
            return
        launched = following


def teacher_forced_logits(lm: LoadedModel, input_ids: torch.Tensor, forced_ids: torch.Tensor,
                          policy: Policy | None = None, attention_mask: torch.Tensor | None = None):
    """Logits [B, 1 + n, V] (float32): after the prefill, then after feeding each of forced_ids [B, n].

    The prompt is prefilled with the policy's compression and the forced tokens go through decode
    steps, so the policy also acts during the continuation: this is what a continuation's perplexity
    after a compressed context is computed from (evaluate.py).
    """
    input_ids, attention_mask = check_inputs(lm, input_ids, attention_mask, 1)
    req = start_request(lm, input_ids, attention_mask, policy)
    forced_ids = forced_ids.to(input_ids.device)
    with torch.inference_mode():
        out = [step(req, input_ids)[0]]
        out += [step(req, forced_ids[:, i])[0] for i in range(forced_ids.shape[1])]
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- inputs

def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Original positions [B, T]: 0.. over each row's real tokens, -1 on left padding."""
    if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
        raise ValueError("prompts must be left-padded (attention_mask 0s only before the 1s)")
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, -1)


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
