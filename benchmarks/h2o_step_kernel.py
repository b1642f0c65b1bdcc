"""Run on the GPU machine: one layer's H2O decode step, the position-indexed path against the slot-indexed
one (h2o.FUSED_STEP: kernels/h2o_step_triton.py), to JSON: errors of the kernels against their twin, and
the time of a step as the engine runs it (the token's write into the freed slot, policy.decode, the
cache's Evict), eagerly, host work included.

    PYTHONPATH=. python3 benchmarks/h2o_step_kernel.py benchmarks/h2o_step_kernel.json

Shapes: Llama-2-7B (32 heads of 128, one per KV head) and the embedded model (6 heads of 64, 2 KV heads),
bfloat16, batch 1 and 8, a layer holding 205, 1024, 1639 and 8192 tokens once full (the step sees one
more): 205 and 1639 are what the engine's layer holds with H2O's default kv_budget (20% of 1k and 8k
prompts), 1024 and 8192 the first run's sizes. The slots are out of position order, as after evictions.
Times: median of 5 runs of 200 steps (torch.cuda.Event), microseconds per layer and step; also the two
kernels alone and the position path's scorer alone. Each case records the kernels' launch grids
(`grids`: the first kernel's (chunks, rows, KV heads), the second's (blocks, rows)), their program
counts and the first kernel's chunk size: at batch 1 the first version's second kernel had only
cdiv(T, 64) programs, each looping over every KV head, which is why its time stayed ~180 us from 1k to 8k
slots (h2o_step_triton.py, module docstring). Errors: the kernels against the twin on one state (Evict
scores, slot scores) and whether both evict the same slots.
"""

import json
import statistics
import sys

import torch

sys.path.insert(0, ".")
from pyramid_core.bench.harness import environment  # noqa: E402
from pyramid_core.cache import LayerCache  # noqa: E402
from pyramid_core.kernels.h2o_step import h2o_step_torch, step_backend  # noqa: E402
from pyramid_core.kernels.h2o_step_triton import chunk_size, h2o_step_triton, launch_grids  # noqa: E402
from pyramid_core.kernels.scores import recent_attention_scores  # noqa: E402
from pyramid_core.policies.base import LayerContext  # noqa: E402
from pyramid_core.policies.h2o import H2OPolicy  # noqa: E402

SHAPES = {"llama2-7b": dict(H=32, H_kv=32, D=128), "embedded": dict(H=6, H_kv=2, D=64)}
HELD = (205, 1024, 1639, 8192)  # H2O's 20% of 1k, 1k, 20% of 8k, 8k
RUNS, STEPS = 5, 200
DTYPE = torch.bfloat16


def full_layer(B, H_kv, held, D, gen):
    """A layer one step before the write: held + 1 slots, positions a permutation (evictions), the
    evicted slot pending; returns (layer, first free position)."""
    T = held + 1
    layer = LayerCache(B, H_kv, D, DTYPE, torch.device("cuda"), 16)
    keys = torch.randn(B, H_kv, T, D, device="cuda", generator=gen).to(DTYPE)
    positions = torch.stack([torch.randperm(T, device="cuda", generator=gen) for _ in range(B)]) * 2
    layer.append(keys, keys.clone(), positions, [T] * B)
    layer.evicted = torch.randint(0, T, (B,), device="cuda", generator=gen)
    layer.counts = [held] * B
    return layer, 2 * T


def stepper(by_slot, B, shape, held, gen):
    """A closure running one engine-like step of one layer (state advances across calls)."""
    H, H_kv, D = shape["H"], shape["H_kv"], shape["D"]
    layer, p0 = full_layer(B, H_kv, held, D, gen)
    recent = held // 2
    policy = H2OPolicy(kv_budget=1.0, recent_share=recent / held)
    state = policy.new_state(1)
    state.by_slot, state.budgets = by_slot, [held] * B
    state.scores[0] = torch.rand(B, p0 + RUNS * STEPS + 200, device="cuda", generator=gen)
    n = RUNS * STEPS + 50
    q = torch.randn(B, H, 1, D, device="cuda", generator=gen).to(DTYPE)
    k_new = torch.randn(B, H_kv, 1, D, device="cuda", generator=gen).to(DTYPE)
    q_pos = [torch.full((B, 1), p0 + i, device="cuda") for i in range(n)]  # the engine's req.positions
    i = [0]

    def one():
        p = p0 + i[0]
        layer.append(k_new, k_new, q_pos[i[0]], [1] * B)
        ctx = LayerContext(0, 1, "decode", list(layer.counts), [p + 1] * B, state, q, q_pos[i[0]], D ** -0.5,
                           layer.held)
        layer.apply(policy.decode(ctx))
        i[0] += 1
    return one


def time_us(fn) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(STEPS):
            fn()
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) * 1e3 / STEPS)
    return statistics.median(runs)


def errors(B, shape, held, gen):
    """Kernels against the twin on one slot state: max errors and whether the evicted slots agree."""
    H, H_kv, D = shape["H"], shape["H_kv"], shape["D"]
    layer, p0 = full_layer(B, H_kv, held, D, gen)
    layer.evicted = None
    keys, positions = layer.held()
    q = torch.randn(B, H, 1, D, device="cuda", generator=gen).to(DTYPE)
    q_pos = torch.full((B, 1), p0, device="cuda")
    scores = torch.rand(positions.shape, device="cuda", generator=gen)
    last = positions.clone()
    last[:, :3] = -2  # three slots restart
    recent = torch.full_like(q_pos, held // 2)
    twin = (scores.clone(), last.clone())
    want = h2o_step_torch(q, q_pos, keys, positions, *twin, recent, D ** -0.5)
    got = h2o_step_triton(q, q_pos, keys, positions, scores, last, recent, D ** -0.5)
    finite = want.isfinite()
    same_inf = bool((finite == got.isfinite()).all())
    return {"max_abs_err_evict_scores": float((got - want)[finite].abs().max()),
            "max_abs_err_slot_scores": float((scores - twin[0]).abs().max()),
            "same_always_slots": same_inf, "same_positions_recorded": bool(torch.equal(last, twin[1])),
            "same_argmin": bool(torch.equal(got.argmin(1), want.argmin(1)))}


def grid_info(B, shape, held):
    """The kernels' launch grids for the step (held + 1 slots) and their program counts."""
    T = held + 1
    grids = launch_grids(B, shape["H_kv"], T)
    programs = {f"programs_{name}": int(torch.tensor(grid).prod()) for name, grid in grids.items()}
    return {"slots": T, "chunk": chunk_size(T), "grids": {k: list(v) for k, v in grids.items()}, **programs}


def case(name, B, held):
    shape = SHAPES[name]
    gen = torch.Generator(device="cuda").manual_seed(B * 7 + held)
    row = {"case": f"{name}-B{B}-held{held}", **grid_info(B, shape, held), **errors(B, shape, held, gen)}
    row["position_path_us"] = time_us(stepper(False, B, shape, held, gen))
    row["slot_path_us"] = time_us(stepper(True, B, shape, held, gen))
    H, H_kv, D = shape["H"], shape["H_kv"], shape["D"]
    layer, p0 = full_layer(B, H_kv, held, D, gen)
    layer.evicted = None
    keys, positions = layer.held()
    q = torch.randn(B, H, 1, D, device="cuda", generator=gen).to(DTYPE)
    q_pos, ones = torch.full((B, 1), p0, device="cuda"), torch.ones(B, 1, device="cuda")
    scores, last = torch.zeros(positions.shape, device="cuda"), positions.clone()
    row["kernels_alone_us"] = time_us(
        lambda: h2o_step_triton(q, q_pos, keys, positions, scores, last, torch.ones_like(q_pos), D ** -0.5))
    row["position_scorer_alone_us"] = time_us(
        lambda: recent_attention_scores(q, q_pos, keys, positions, ones, D ** -0.5))
    row["speedup"] = round(row["position_path_us"] / row["slot_path_us"], 2)
    print(row, flush=True)
    return row


if __name__ == "__main__":
    with torch.inference_mode():
        rows = [case(name, B, held) for name in SHAPES for B in (1, 8) for held in HELD]
    info = {**environment(), "h2o_step": step_backend(torch.device("cuda"))}
    json.dump({"environment": info, "cases": rows}, open(sys.argv[1], "w"), indent=1)
