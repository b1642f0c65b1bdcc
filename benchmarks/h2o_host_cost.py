"""Run on the GPU machine: where H2O's decode step spends the host's time, one layer, piece by piece.

    PYTHONPATH=. python3 benchmarks/h2o_host_cost.py benchmarks/h2o_host_cost.json

`bench modes` has H2O at 0.36-0.63x the baseline at batch 1 (H200, 2026-11-30), and h2o_step_kernel.py's
"kernels alone" at ~170 us a layer for kernels that read ~1.6 MB: the step is bound by the host, not the
GPU. This splits a layer's step (Llama-2-7B and the embedded model's heads, batch 1, 205 slots held: H2O's
default 20% of a 1k prompt) into its pieces and times each two ways: the host's time per call (wall
clock over many calls without a sync: while the GPU keeps up, that is what the host spends launching) and
the GPU's (CUDA events around the same calls). Reference rows: one tiny eager op (the launch floor) and the
decode attention that every mode runs.
"""

import json
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
import h2o_step_kernel  # noqa: E402
from h2o_step_kernel import DTYPE, SHAPES, full_layer, stepper  # noqa: E402

from pyramid_core.attention import attention  # noqa: E402
from pyramid_core.bench.harness import environment  # noqa: E402
from pyramid_core.kernels import h2o_step_triton as kt  # noqa: E402

CALLS, RUNS = 500, 5
# the engine-like stepper makes one position a call: enough for our warm-up and runs
h2o_step_kernel.RUNS, h2o_step_kernel.STEPS = RUNS + 1, CALLS


def timed(fn) -> dict:
    """{'host_us', 'gpu_us'} per call, medians over RUNS runs of CALLS calls (after a warm-up)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    host, gpu = [], []
    for _ in range(RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        host.append((time.perf_counter() - t0) * 1e6 / CALLS)
        end.record()
        torch.cuda.synchronize()
        gpu.append(start.elapsed_time(end) * 1e3 / CALLS)
    return {"host_us": round(statistics.median(host), 1), "gpu_us": round(statistics.median(gpu), 1)}


def pieces(name: str, B: int = 1, held: int = 205) -> dict:
    shape = SHAPES[name]
    H, H_kv, D = shape["H"], shape["H_kv"], shape["D"]
    gen = torch.Generator(device="cuda").manual_seed(1)
    layer, p0 = full_layer(B, H_kv, held, D, gen)
    layer.evicted = None
    keys, positions = layer.held()
    values = keys.clone()
    T = keys.shape[2]
    q = torch.randn(B, H, 1, D, device="cuda", generator=gen).to(DTYPE)
    q_pos = torch.full((B, 1), p0, device="cuda")
    scores, last = torch.zeros(positions.shape, device="cuda"), positions.clone()
    recent, scale = torch.full_like(q_pos, held // 2), D ** -0.5
    # the two launches with everything prepared, as h2o_step_triton prepares them
    launches = kt.step_launches(q.reshape(B, H, D).contiguous(), q_pos.reshape(B).contiguous(), keys, positions,
                                scores, last, recent.reshape(B).contiguous(), scale)
    out = launches()

    def evict():
        layer.evict(out)
        layer.evicted, layer.counts = None, [held + 1] * B  # as if the token were written: evict again

    k_new = torch.randn(B, H_kv, 1, D, device="cuda", generator=gen).to(DTYPE)

    def write():
        layer.evicted = torch.zeros(B, dtype=torch.long, device="cuda")
        layer.append(k_new, k_new, q_pos, [1] * B)
        layer.counts = [held] * B

    rows = {
        "launch_floor (one eager add)": timed(lambda: q_pos.add_(0)),
        "decode attention (SDPA, every mode)": timed(
            lambda: attention(q, keys, values, q_pos, positions, scale=scale, holes=False, window=None,
                              causal_square=False, decode_kernel=True)),
        "h2o_step_triton (whole wrapper)": timed(
            lambda: kt.h2o_step_triton(q, q_pos, keys, positions, scores, last, recent, scale)),
        "the two launches alone": timed(launches),
        "four torch.empty": timed(lambda: [torch.empty(B, H, T, device="cuda") for _ in range(4)]),
        "cache.evict (argmin on the device)": timed(evict),
        "write into the evicted slot": timed(write),
        "engine-like layer step (write, policy.decode, evict)": timed(stepper(True, B, shape, held, gen)),
    }
    return {"case": f"{name}-B{B}-held{held}", "pieces": rows}


if __name__ == "__main__":
    with torch.inference_mode():
        cases = [pieces(name) for name in SHAPES]
    for c in cases:
        print(c["case"])
        for k, v in c["pieces"].items():
            print(f"  {k:55s} host {v['host_us']:7.1f} us   gpu {v['gpu_us']:7.1f} us")
    json.dump({"environment": {**environment(), "triton": kt.triton.__version__}, "cases": cases},
              open(sys.argv[1], "w"), indent=1)
