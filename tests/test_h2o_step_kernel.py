"""H2O's slot-indexed decode step (h2o.FUSED_STEP, kernels/h2o_step.py) against the position-indexed path
it shadows, and its Triton kernels against their twin.

The twin computes the attention as the position path does, so the two must keep the same positions in
every layer and row at every step, and give the same logits. The kernels run in Triton's interpreter on
a CPU (TRITON_INTERPRET=1, conftest.py): scores to tolerance, the evicted slots identical, over several
steps of one evolving slot state.
"""

import importlib.util
import os
import sys
from collections import Counter

import pytest
import torch

from pyramid_core import generate
from pyramid_core.cache import LayerCache
from pyramid_core.kernels import h2o_step as h2o_step_module
from pyramid_core.kernels.h2o_step import h2o_step_torch
from pyramid_core.kernels.scores import recent_attention_scores_torch
from pyramid_core.policies import base, h2o
from pyramid_core.policies.h2o import H2OPolicy
from tests.h2o_kernel_standins import slot_kernels
from tests.op_log import RegionLog
from tests.test_streaming_ring import prompts, run
from tests.tiny_models import tiny_model


# ----------------------------------------------------------------------------- slot path = position path

# (prompt lengths, kv_budget, recent_share, kv heads of 4): batch 2 with pads and unequal budgets; odd
# heavy and recent sizes; the whole prompt kept; no recent window (budget 1); all recent but one; GQA
# groups of 1, 2 and 4
CASES = [([37, 37], 0.3, 0.5, 2), ([61, 17], 0.37, 0.34, 2), ([40, 13], 0.5, 1.0, 1), ([9, 2], 1.0, 0.7, 4),
         ([1, 1], 0.5, 0.5, 2), ([150, 90], 0.07, 0.43, 1), ([33, 50], 0.25, 0.0, 4)]


def plain_scoring(monkeypatch):
    """Both paths score with the PyTorch scorer, on a GPU too (where the position path would run the
    Triton scorer and the slot path its kernels): then they must agree bit for bit."""
    monkeypatch.setattr(base, "recent_attention_scores", recent_attention_scores_torch)
    monkeypatch.setattr(h2o, "h2o_step", h2o_step_torch)


def run_path(by_slot, lm, policy, ids, mask, steps, monkeypatch):
    plain_scoring(monkeypatch)
    monkeypatch.setattr(h2o, "FUSED_STEP", by_slot)
    return run(lm, policy, ids, mask, steps)[:2]


@pytest.mark.parametrize("lengths,share,recent,kv_heads", CASES, ids=lambda c: str(c).replace(" ", ""))
def test_slot_path_keeps_what_the_position_path_kept(lengths, share, recent, kv_heads, monkeypatch):
    lm = tiny_model("llama", layers=3, num_key_value_heads=kv_heads)
    ids, mask = prompts(lengths, lm.config.vocab_size)
    policy = H2OPolicy(kv_budget=share, recent_share=recent)
    slot_logits, slot_kept = run_path(True, lm, policy, ids, mask, 40, monkeypatch)
    ref_logits, ref_kept = run_path(False, lm, policy, ids, mask, 40, monkeypatch)
    assert slot_kept == ref_kept
    assert torch.equal(slot_logits, ref_logits)


def test_the_switch_routes_a_request_to_slot_scores(monkeypatch):
    """With FUSED_STEP on, every layer's scores move to the slots at the first decode step and stay there."""
    from pyramid_core.engine import start_request, step

    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([30, 21], lm.config.vocab_size)
    for on in (True, False):
        monkeypatch.setattr(h2o, "FUSED_STEP", on)
        req = start_request(lm, ids, mask, H2OPolicy(kv_budget=0.4))
        with torch.inference_mode():
            step(req, ids)
            for token in range(3, 8):
                step(req, torch.full((2,), token))
        assert req.state.by_slot == on
        assert all((s is not None) == on for s in req.state.slots)
        assert all((s is None) == on for s in req.state.scores)


def test_back_to_positions_gives_the_position_path_scores(monkeypatch):
    """scores_by_position (a step where some row is not one over its budget) rebuilds the scores the
    position path holds for every held position."""
    from pyramid_core.engine import start_request, step
    from pyramid_core.policies.base import LayerContext

    lm = tiny_model("llama", layers=2)
    ids, mask = prompts([30, 21], lm.config.vocab_size)
    plain_scoring(monkeypatch)
    reqs = []
    for on in (True, False):
        monkeypatch.setattr(h2o, "FUSED_STEP", on)
        req = start_request(lm, ids, mask, H2OPolicy(kv_budget=0.4, recent_share=0.3))
        with torch.inference_mode():
            step(req, ids)
            for token in range(3, 12):
                step(req, torch.full((2,), token))
        reqs.append(req)
    slot, ref = reqs
    with torch.inference_mode():
        for idx, layer in enumerate(slot.cache.layers):
            ctx = LayerContext(idx, 2, "decode", list(layer.counts), slot.seen, slot.state, None, None, 1.0,
                               layer.held)
            slot.policy.scores_by_position(ctx)
            for row in range(2):
                held = ctx.positions[row][ctx.positions[row] >= 0]  # the freed slot is now empty: not held
                assert torch.equal(slot.state.scores[idx][row, held], ref.state.scores[idx][row, held])


# ----------------------------------------------------------------------------- engine, switch on and off

def greedy(lm, ids, mask, monkeypatch, by_slot, kernel=False):
    plain_scoring(monkeypatch)
    monkeypatch.setattr(h2o, "FUSED_STEP", by_slot)
    if kernel:  # the Triton kernels, on a CPU in Triton's interpreter
        monkeypatch.setattr(h2o, "h2o_step", kernel_step)
    records = list(generate(lm, ids, attention_mask=mask, policy=H2OPolicy(kv_budget=0.3, recent_share=0.4),
                            max_new_tokens=24, record_positions=True))
    return [r.token_ids for r in records], [r.kept_positions for r in records]


def test_engine_greedy_tokens_equal_with_the_switch_on_and_off(monkeypatch):
    lm = tiny_model("llama", layers=3)
    ids, mask = prompts([45, 28], lm.config.vocab_size)
    assert greedy(lm, ids, mask, monkeypatch, True) == greedy(lm, ids, mask, monkeypatch, False)


# ----------------------------------------------------------------------------- kernels against the twin

triton_missing = importlib.util.find_spec("triton") is None
interpreter_off = not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
needs_triton = pytest.mark.skipif(triton_missing or interpreter_off,
                                  reason="the kernels need Triton (on a CPU, its interpreter: conftest.py)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def kernel_step(*args):
    from pyramid_core.kernels.h2o_step_triton import h2o_step_triton

    return h2o_step_triton(*args)


def evicted_slot(scores, positions):
    """The slot the cache frees for these Evict scores (cache.evict, its tie rule)."""
    B, T = positions.shape
    layer = LayerCache(B, 1, 16, torch.float32, positions.device, 16)
    layer.positions, layer.length, layer.counts, layer.has_holes = positions.clone(), T, [T] * B, True
    layer.evict(scores)
    return layer.evicted


def slot_layer(B, H_kv, T, D, dtype, gen):
    """Keys as a view of a larger buffer; positions out of slot order with empty slots in front of
    shorter rows and holes, one slot per row after the query (masked out)."""
    keys = torch.randn(B, H_kv, T + 11, D, generator=gen).to(DEVICE, dtype)[:, :, :T]
    positions = torch.stack([torch.randperm(T, generator=gen) * 3 + 5 for _ in range(B)])
    for b in range(B):
        positions[b, :b * (T // 5)] = -1
        positions[b, torch.rand(T, generator=gen) < 0.1] = -1
    q_pos = positions.max(1, keepdim=True).values + 1
    positions[:, 1] = q_pos[:, 0] + 7  # a slot after the query
    last = positions.clone()
    last[torch.rand(B, T, generator=gen) < 0.05] = -2  # slots whose token changed: they restart
    scores = (torch.rand(B, T, generator=gen) * 4).masked_fill(positions < 0, 0.0)
    return keys, positions.to(DEVICE), q_pos.to(DEVICE), scores.to(DEVICE), last.to(DEVICE)


KERNEL_CASES = [  # B, H, H_kv, T, D
    (3, 4, 4, 100, 32),    # groups of 1
    (3, 8, 2, 300, 64),    # groups of 4, five chunks of the first kernel
    (1, 6, 2, 37, 64),     # the embedded model's heads (groups of 3)
    (2, 4, 1, 513, 32),    # one KV head, a block of one slot
    (1, 32, 32, 205, 16),  # Llama-2-7B's 32 groups of 1, the engine's batch-1 slots at 20% of 1k: 4 chunks,
                           # 13 slots in the last
    (2, 4, 4, 1639, 16),   # groups of 1 at the engine's 20% of 8k, batch 2: 26 chunks
    (1, 2, 2, 4200, 16),   # chunks of 128 slots (chunk_size), the last one short
    (2, 64, 16, 70, 16),   # more heads than one tile of the second kernel (two passes of 32)
]


@needs_triton
@pytest.mark.parametrize("B, H, H_kv, T, D", KERNEL_CASES, ids=lambda v: str(v))
# no bfloat16: the interpreter's tl.dot over bfloat16 is off by ~0.3 in these scores (the position path's
# scorer too, scores_triton.py), so bfloat16 is checked on the GPU (benchmarks/h2o_step_kernel.py)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_kernel_equals_twin_over_steps(B, H, H_kv, T, D, dtype):
    gen = torch.Generator().manual_seed(B * 1000 + T)
    keys, positions, q_pos, scores, last = slot_layer(B, H_kv, T, D, dtype, gen)
    recent = torch.tensor([[3], [0], [T // 4]])[:B].to(DEVICE)
    mine = (scores.clone(), last.clone())
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    for _ in range(4):  # each step writes the new token over the slot the last one freed
        q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE, dtype)
        want = h2o_step_torch(q, q_pos, keys, positions, scores, last, recent, D ** -0.5)
        got = kernel_step(q, q_pos, keys, positions, mine[0], mine[1], recent, D ** -0.5)
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        torch.testing.assert_close(mine[0], scores, atol=tol * 4, rtol=tol)
        assert torch.equal(mine[1], last)

        slot = evicted_slot(want, positions)
        assert torch.equal(evicted_slot(got, positions), slot)
        rows = torch.arange(B, device=DEVICE)
        positions[rows, slot] = q_pos[:, 0]
        keys[rows, :, slot] = torch.randn(B, H_kv, D, generator=gen).to(DEVICE, dtype)
        q_pos = q_pos + 1


@needs_triton
@pytest.mark.parametrize("B, H, H_kv, T, D", KERNEL_CASES[:5], ids=lambda v: str(v))
@pytest.mark.parametrize("splits", [1, 3])
def test_one_pass_attention_and_scores_equal_attention_and_twin(B, H, H_kv, T, D, splits):
    """A steady step in one pass over the slots (h2o_attend_step's kernels: the decode kernel's logits and
    split statistics, then the step's second kernel) gives the attention the engine's SDPA path gives and
    the scores and slot state the twin gives, step after step."""
    from pyramid_core.attention import attention
    from pyramid_core.kernels.decode_triton import decode_attention_and_logits
    from pyramid_core.kernels.h2o_step_triton import h2o_step_from_logits

    gen = torch.Generator().manual_seed(B * 1000 + T + splits)
    keys, positions, q_pos, scores, last = slot_layer(B, H_kv, T, D, torch.float32, gen)
    values = torch.randn(keys.shape, generator=gen).to(DEVICE)
    recent = torch.tensor([[3], [0], [T // 4]])[:B].to(DEVICE)
    mine = (scores.clone(), last.clone())
    for _ in range(3):
        q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
        want_evict = h2o_step_torch(q, q_pos, keys, positions, scores, last, recent, D ** -0.5)
        want_out = attention(q, keys, values, q_pos, positions, scale=D ** -0.5, holes=True, window=None,
                             causal_square=False, decode_kernel=False)
        out, logits, m, s = decode_attention_and_logits(q, keys, values, q_pos, positions, D ** -0.5, splits)
        evict = h2o_step_from_logits(logits, m, s, positions, mine[0], mine[1], q_pos, recent)
        torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(evict, want_evict, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine[0], scores, atol=4e-5, rtol=1e-5)
        assert torch.equal(mine[1], last)


@needs_triton
def test_engine_greedy_tokens_equal_with_the_kernels(monkeypatch):
    """The kernels (compiled on a GPU, in the interpreter on a CPU) in the engine's decode steps keep what
    the position path kept."""
    lm = tiny_model("llama", layers=2)
    lm.model.to(DEVICE)
    ids, mask = (t.to(DEVICE) for t in prompts([45, 28], lm.config.vocab_size))
    assert greedy(lm, ids, mask, monkeypatch, True, kernel=True) == greedy(lm, ids, mask, monkeypatch, False)


@needs_triton
@pytest.mark.parametrize("reserve", [False, True], ids=["evict-graphs", "step-graph"])
def test_engine_steady_steps_in_one_pass_keep_what_two_passes_kept(reserve, monkeypatch):
    """A full layer's steady step, captured per layer (evict_graphs.py) or inside the whole step
    (step_graphs.py, over a reserve), attending and scoring in one pass over the slots (the CUDA path,
    forced here into Triton's interpreter) emits the tokens and keeps the positions that attention and the
    step's own kernels apart do."""
    from pyramid_core.kernels import decode_triton

    lm = tiny_model("llama", layers=2)
    lm.model.to(DEVICE)
    ids, mask = (t.to(DEVICE) for t in prompts([45, 45], lm.config.vocab_size))  # no holes: steady steps
    policy = H2OPolicy(kv_budget=0.3, recent_share=0.4)

    def run():
        return [(r.token_ids, r.kept_positions) for r in generate(
            lm, ids, attention_mask=mask, policy=policy, max_new_tokens=24, record_positions=True,
            reserve_kv=reserve, cuda_graphs=True)]

    monkeypatch.setattr(h2o, "h2o_step", kernel_step)  # the step's own two kernels, as on CUDA
    apart = run()
    calls = []
    one_pass = decode_triton.decode_attention_and_logits
    monkeypatch.setattr(decode_triton, "decode_attention_and_logits", lambda *a: calls.append(1) or one_pass(*a))
    monkeypatch.setattr(h2o_step_module, "kernel_fits", lambda q, k: True)
    monkeypatch.setattr(h2o_step_module, "decode_kernel_supports", lambda q, k: True)
    assert run() == apart
    assert calls  # the steady steps took the one-pass path


def test_the_kernels_take_cuda_layers_only():
    q, k = torch.zeros(1, 4, 1, 32), torch.zeros(1, 2, 5, 32)
    assert not h2o_step_module.kernel_fits(q, k)


# ----------------------------------------------------------------------------- the slot step in the engine

# A decode step on a GPU must not wait for it: the host runs ahead and launches while the GPU works.
# These ops read a device value on the host (aten's names; Tensor.tolist & co. dispatch nothing on a CPU
# tensor, so the host reads are watched as Python calls instead); the copies would copy the layer's keys.
SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero", "aten::equal",
            "aten::_assert_async"}
HOST_READS = {"Tensor.tolist", "Tensor.item", "Tensor.cpu", "Tensor.numpy"}
COPIES = {"aten::clone", "aten::contiguous", "aten::copy_", "aten::_to_copy"}


class FakeLaunch:
    """kernel[grid](*args) of a Triton kernel on a CPU: the host code around it runs as on CUDA, `compute`
    stands in for the launch (one launch on the GPU), its ops out of the log (region "kernel")."""

    def __init__(self, log, compute=None):
        self.log, self.compute = log, compute

    def __getitem__(self, grid):
        def launch(*args, **meta):
            if self.compute is not None:
                with self.log.region("kernel"):
                    self.compute(*args)
        return launch


class StepLog(RegionLog):
    """The aten ops and host reads of policy.decode and LayerCache.apply, by region."""

    def __init__(self):
        super().__init__("engine")
        self.ops, self.reads = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.where[-1] != "kernel":
            self.ops[(self.where[-1], func._schema.name)] += 1
        return func(*args, **(kwargs or {}))

    def watch(self, frame, event, fn):  # sys.setprofile
        if event == "c_call" and getattr(fn, "__qualname__", "") in HOST_READS and self.where[-1] != "kernel":
            self.reads[(self.where[-1], fn.__qualname__)] += 1


def warm_decode_steps(by_slot, monkeypatch, layers=3, steps=6):
    """(StepLog, graph replays) over `steps` warm decode steps of the engine with CUDA graphs (plain calls
    on a CPU), the kernels chosen as on CUDA: h2o_step_triton's host code, the launches faked."""
    from pyramid_core.cache import LayerCache
    from pyramid_core.graphs import Replay
    from pyramid_core.kernels import h2o_step_triton

    log, replays = StepLog(), Counter()
    monkeypatch.setattr(h2o, "FUSED_STEP", by_slot)
    monkeypatch.setattr(base, "recent_attention_scores", recent_attention_scores_torch)
    monkeypatch.setattr(h2o_step_module, "kernel_fits", lambda q, k: True)
    first, second = slot_kernels()
    monkeypatch.setattr(h2o_step_triton, "h2o_logits_fwd_kernel", FakeLaunch(log, first))
    monkeypatch.setattr(h2o_step_triton, "h2o_step_fwd_kernel", FakeLaunch(log, second))
    policy = H2OPolicy(kv_budget=0.5, recent_share=0.5)
    decode, apply, replay = policy.decode, LayerCache.apply, Replay.__call__

    def logged_decode(ctx):
        with log.region("policy.decode"):
            return decode(ctx)

    def logged_apply(layer, answer):
        with log.region("cache.apply"):
            return apply(layer, answer)

    def counted_replay(graph):
        replays["replays"] += 1
        if "capture.<locals>.step" in graph.fn.__qualname__:  # a layer's whole steady step (evict_graphs.py)
            with log.region("evict graph"):
                return replay(graph)
        return replay(graph)

    monkeypatch.setattr(policy, "decode", logged_decode)
    monkeypatch.setattr(LayerCache, "apply", logged_apply)
    monkeypatch.setattr(Replay, "__call__", counted_replay)
    lm = tiny_model("llama", layers=layers)
    ids, mask = prompts([40], lm.config.vocab_size)
    records = generate(lm, ids, attention_mask=mask, policy=policy, max_new_tokens=3 + steps, cuda_graphs=True)
    for _ in range(3):  # the prefill; the graphs' capture and the slot state at the first decode step
        next(records)
    replays.clear()
    with log:
        sys.setprofile(log.watch)
        try:
            warm = list(records)
        finally:
            sys.setprofile(None)
    assert len(warm) == steps
    return log, replays["replays"]


@needs_triton
def test_slot_step_in_the_engine_never_waits_for_the_device(monkeypatch):
    """Regression guard (the slot step decoded slower in the engine than its kernels promised,
    benchmarks/h2o_slot_step_cpu.md): with the kernels chosen as on CUDA, a warm decode step reads nothing
    back to the host and copies no keys, whether the policy answers eagerly (the position path) or each
    layer's whole step replays as one graph (the slot path, evict_graphs.py)."""
    slot, slot_replays = warm_decode_steps(True, monkeypatch)
    position, position_replays = warm_decode_steps(False, monkeypatch)
    for log in (slot, position):
        assert not {key: n for key, n in log.ops.items() if key[1] in SYNC_OPS and key[0] != "engine"}
        assert not {key: n for key, n in log.reads.items() if key[0] != "engine"}
    # the slot path's steady steps run as one graph a layer (evict_graphs.py), its only copies the graph's
    # two small device ones (the attention output into the post graph's input, the next slot to write)
    copies = {key: n for key, n in slot.ops.items() if key[1] in COPIES and key[0] != "engine"}
    assert copies == {("evict graph", "aten::copy_"): 6 * 3 * 2}
    assert slot_replays == 6 * 3 * 3  # pre, the evict graph and post of every layer at every step
    assert position_replays == 6 * 3 * 2  # pre and post; the policy's part eager
    # the engine's own host read per step (the sampled tokens) is all there is outside the policy
    assert slot.reads == position.reads == Counter({("engine", "Tensor.tolist"): 6})


def test_chunks_bound_the_grid():
    """The first kernel's chunks: one block up to 4096 slots (a short layer still spreads over the GPU),
    at most 64 per row beyond; every KV head gets its own programs."""
    pytest.importorskip("triton")
    from pyramid_core.kernels.h2o_step_triton import chunk_size, launch_grids

    assert launch_grids(1, 32, 205) == {"logits": (4, 1, 32), "step": (4, 1)}
    assert launch_grids(1, 32, 1639) == {"logits": (26, 1, 32), "step": (26, 1)}
    assert launch_grids(8, 32, 8192) == {"logits": (64, 8, 32), "step": (128, 8)}
    assert [chunk_size(T) for T in (1, 64, 4096, 4097, 8192, 8193, 100_000)] == [64, 64, 64, 128, 128, 256, 2048]
    assert all(launch_grids(1, 1, T)["logits"][0] <= 64 for T in range(1, 20_000, 97))
