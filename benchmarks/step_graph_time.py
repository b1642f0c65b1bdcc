"""Where a batch-1 decode step of the whole-step graph (pyramid_core/step_graphs.py) spends its time, on the
GPU machine, mode by mode: `generate`'s step (one step ahead, as it decodes on a GPU), the engine's step driven
one at a time (graph replay plus the host's bookkeeping and the token's trip to the host), the graph replayed
alone (its kernels back to back), and the kernels' times in one replay by name. The engine's step minus the
replay is what the host adds when nothing overlaps it; `generate`'s step shows how much of that decoding ahead
hides. A mode slower than the baseline shows whether its extra is the GPU's (a longer replay, more kernels) or
the host's.

    python benchmarks/step_graph_time.py llama2-7b 1024 out.json            # the baseline
    python benchmarks/step_graph_time.py embedded 1024 out.json baseline pyramid streaming h2o recurformer
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from pyramid_core.bench import harness
from pyramid_core.bench.modes import load_shape, mode_policies
from pyramid_core.engine import generate, start_request, step


def engine_steps_ms(req, token, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        token = step(req, token)[0].argmax(-1)
        token.tolist()  # the engine's per-step trip to the host (sample().tolist())
        times.append((time.perf_counter() - start) * 1e3)
    return times


def replay_ms(graph: torch.cuda.CUDAGraph, replays: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def kernel_table(graph: torch.cuda.CUDAGraph, replays: int = 5, top: int = 40) -> list[dict]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return [{"kernel": e.key[:90], "calls_per_step": e.count / replays,
             "us_per_step": round(e.device_time_total / replays, 1)} for e in events[:top]]


def generate_step_ms(lm, ids, policy, tokens: int = 64) -> float:
    """The median warm decode step of `generate` over a reserved KV (one step ahead on a GPU)."""
    list(generate(lm, ids, policy=policy, max_new_tokens=tokens, reserve_kv=True))  # capture, compile
    records = list(generate(lm, ids, policy=policy, max_new_tokens=tokens, reserve_kv=True))
    return statistics.median(r.step_time_s for r in records[1:] if not r.warmup_s) * 1e3


def mode_times(lm, ids, policy) -> dict:
    req = start_request(lm, ids, torch.ones_like(ids), policy, 200)
    req.graphs = lm.decode_graphs
    with torch.inference_mode():
        token = step(req, ids)[0].argmax(-1)
        engine = engine_steps_ms(req, token, 60)[10:]
        graph = req.step_graph.replay.graph
        assert graph is not None, "the step graph was not captured"
        alone = statistics.median(replay_ms(graph, 50) for _ in range(3))
        kernels = kernel_table(graph)
    return {"generate_step_ms": round(generate_step_ms(lm, ids, policy), 3),
            "engine_step_ms": round(statistics.median(engine), 3), "replay_alone_ms": round(alone, 3),
            "host_added_ms": round(statistics.median(engine) - alone, 3),
            "kernel_launches_per_step": sum(k["calls_per_step"] for k in kernels), "kernels": kernels}


def main(shape: str, prompt: int, out: str, modes: list[str]) -> None:
    lm = load_shape(shape, prompt)
    ids = harness.random_prompts(1, prompt, lm.config.vocab_size)
    with tempfile.TemporaryDirectory() as scratch:
        policies = mode_policies(lm, modes, shape, Path(scratch))
        result = {"environment": harness.environment(), "shape": shape, "prompt": prompt,
                  "modes": {m: mode_times(lm, ids, policies[m]) for m in modes}}
    for m, t in result["modes"].items():
        print(f"{m:20s} generate {t['generate_step_ms']} ms, engine {t['engine_step_ms']} ms, replay "
              f"{t['replay_alone_ms']} ms, {t['kernel_launches_per_step']:.0f} kernels")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:] or ["baseline"])
