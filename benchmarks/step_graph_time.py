"""Where a batch-1 decode step of the whole-step graph (pyramid_core/step_graphs.py) spends its time, on the
GPU machine: the engine's step as generate() runs it (graph replay plus the host's bookkeeping and the
token's trip to the host), the graph replayed alone (its kernels back to back), and the kernels' times in one
replay by name. The first minus the second is what the host adds to every step.

    python benchmarks/step_graph_time.py llama2-7b 1024 out.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pyramid_core.bench import harness
from pyramid_core.engine import start_request, step
from pyramid_core.policies.full import FullPolicy


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


def kernel_table(graph: torch.cuda.CUDAGraph, replays: int = 5, top: int = 15) -> list[dict]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return [{"kernel": e.key[:90], "calls_per_step": e.count / replays,
             "us_per_step": round(e.device_time_total / replays, 1)} for e in events[:top]]


def main(shape: str, prompt: int, out: str) -> None:
    lm = harness.random_model(shape, dtype=torch.bfloat16)
    ids = harness.random_prompts(1, prompt, lm.config.vocab_size)
    req = start_request(lm, ids, torch.ones_like(ids), FullPolicy(), 200)
    req.graphs = lm.decode_graphs
    with torch.inference_mode():
        token = step(req, ids)[0].argmax(-1)
        engine = engine_steps_ms(req, token, 60)[10:]
        graph = req.step_graph.replay.graph
        assert graph is not None, "the step graph was not captured"
        alone = statistics.median(replay_ms(graph, 50) for _ in range(3))
        kernels = kernel_table(graph)
    result = {"environment": harness.environment(), "shape": shape, "prompt": prompt,
              "engine_step_ms": round(statistics.median(engine), 3), "replay_alone_ms": round(alone, 3),
              "host_added_ms": round(statistics.median(engine) - alone, 3), "kernels": kernels}
    print(json.dumps(result, indent=1))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
