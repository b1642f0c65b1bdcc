"""Run on the GPU machine: a StackedRNN's fused decode step (recurformer/step_triton.py) against its twin
(RNNHeads.step), one layer's replaced groups, to JSON: errors, and the time of a step replayed in a
CUDA graph (as the engine runs it) and eagerly.

    python benchmarks/rnn_step_kernel.py benchmarks/rnn_step_kernel.json

Shapes: Llama-2-7B (hidden 4096, 32 heads of 128, one query head a KV group: 25% of the groups is 8 in
the stack, as bench.harness.random_adapter spreads them) and Llama-3.2-1B (hidden 2048, 8 KV groups of 4
heads of 64: 25% is 2 groups, 8 heads), batch 1 and 8, bfloat16 and float16, taps 1 and 4. Positions
are in the thousands (RoPE's cos/sin of large angles is where a fast-math sine would show) and one row
of batch 8 is a pad. Errors: the kernel and the twin each against the twin run in float64 on the same
parameters (the kernel should be no worse), and kernel against twin. Times: the median of 5 runs of
200 replays (torch.cuda.Event), per layer; the kernel alone is also swept over BLOCK_K x NUM_WARPS.
"""

import copy
import json
import statistics
import sys

import torch

sys.path.insert(0, ".")
from pyramid_core.bench.harness import environment  # noqa: E402
from pyramid_core.recurformer import stacked, step_triton  # noqa: E402
from pyramid_core.recurformer.rnn import GroupRNN, RNNConfig, RNNHeads  # noqa: E402
from pyramid_core.recurformer.stacked import StackedRNN  # noqa: E402

SHAPES = {"llama2-7b": dict(hidden_size=4096, head_dim=128, heads=1, groups=8),
          "llama3.2-1b": dict(hidden_size=2048, head_dim=64, heads=4, groups=2)}


def make_stack(shape, taps, dtype, seed=0):
    spec = dict(SHAPES[shape])
    n = spec.pop("groups")
    cfg = RNNConfig(**spec, taps=taps)
    gen = torch.Generator().manual_seed(seed)
    rnns = []
    for _ in range(n):
        rnn = GroupRNN(cfg)
        with torch.no_grad():
            for linear in (rnn.q_proj, rnn.k_proj, rnn.v_proj):
                linear.weight.normal_(0, cfg.hidden_size ** -0.5, generator=gen)
            rnn.decay.weight.normal_(0, 0.3 * cfg.hidden_size ** -0.5, generator=gen)
            rnn.out_weight.normal_(1, 0.3, generator=gen)
            rnn.skip.normal_(0, 0.5, generator=gen)
            if rnn.taps is not None:
                rnn.taps.normal_(0, 0.5, generator=gen)
        rnns.append(rnn.to_model("cuda", dtype).eval())
    return StackedRNN(rnns)


def time_us(fn, graph: bool) -> float:
    """Median of 5 x 200 calls (of the graph's replay, or of fn itself), in microseconds per call."""
    fn()
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        fn = g.replay
    runs = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(200):
            fn()
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) * 1e3 / 200)
    return statistics.median(runs)


def step_with(fused: bool, stack, x, pos, state):
    stacked.FUSED_STEP = fused
    try:
        return stack.step(x, pos, state)
    finally:
        stacked.FUSED_STEP = True


def case(shape, B, taps, dtype):
    stack = make_stack(shape, taps, dtype)
    wide = copy.deepcopy(stack).double()
    wide.inv_freq = stack.inv_freq.double()
    gen = torch.Generator(device="cuda").manual_seed(1)
    C = stack.cfg.hidden_size
    x = torch.randn(B, 65, C, device="cuda", generator=gen).to(dtype)
    pos = (torch.arange(65, device="cuda") + 3000).repeat(B, 1) + 97 * torch.arange(B, device="cuda")[:, None]
    if B > 1:
        pos[1, 64] = -1
    with torch.no_grad():
        _, state = stack(x[:, :64], pos[:, :64])  # the prefill's state, as the engine hands it over
        xs, ps = x[:, 64:], pos[:, 64:]
        y_twin, s_twin = step_with(False, stack, xs, ps, state)
        y64, s64 = RNNHeads.step(wide, xs.double(), ps, state.double())
        mine = state.clone()
        y_k, s_k = step_with(True, stack, xs, ps, mine)
        assert s_k is mine
        row = {"case": f"{shape}-B{B}-taps{taps}-{str(dtype)[6:]}", "heads": stack.skip.shape[0],
               "max_abs_err_y_kernel_vs_f64": float((y_k.double() - y64).abs().max()),
               "max_abs_err_y_twin_vs_f64": float((y_twin.double() - y64).abs().max()),
               "max_abs_err_y_kernel_vs_twin": float((y_k.float() - y_twin.float()).abs().max()),
               "max_abs_err_state_kernel_vs_f64": float((s_k.double() - s64).abs().max()),
               "max_abs_err_state_twin_vs_f64": float((s_twin.double() - s64).abs().max()),
               "max_abs_state": float(s64.abs().max())}
        static = state.clone()
        for graph in (True, False):
            tag = "graph" if graph else "eager"
            row[f"twin_us_{tag}"] = time_us(lambda: step_with(False, stack, xs, ps, static), graph)
            row[f"fused_us_{tag}"] = time_us(lambda: step_with(True, stack, xs, ps, static), graph)
        proj = torch.nn.functional.linear(xs[:, 0], stack.proj_weight, stack.proj_bias)
        row["projection_us_graph"] = time_us(
            lambda: torch.nn.functional.linear(xs[:, 0], stack.proj_weight, stack.proj_bias), True)
        flat = ps.reshape(-1).contiguous()
        sweep = {}
        for block_k in (16, 32, 64):
            for warps in (2, 4, 8):
                step_triton.BLOCK_K, step_triton.NUM_WARPS = block_k, warps
                sweep[f"{block_k}x{warps}"] = round(time_us(
                    lambda: step_triton.stacked_step_triton(stack, proj, flat, static), True), 2)
        step_triton.BLOCK_K, step_triton.NUM_WARPS = 32, 4
        row["kernel_alone_us_graph_by_block_k_and_warps"] = sweep
    print(row, flush=True)
    return row


if __name__ == "__main__":
    rows = [case(shape, B, taps, dtype) for shape in SHAPES for B in (1, 8) for taps in (1, 4)
            for dtype in (torch.bfloat16, torch.float16)]
    json.dump({"environment": environment(), "cases": rows}, open(sys.argv[1], "w"), indent=1)
