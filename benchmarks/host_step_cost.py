"""The host's work in a decode step, mode by mode, on a CPU: every decode step of a reserved KV runs as the
request's step graph (step_graphs.py), and here each replay is skipped, so what a step still costs is what the
host does around the graph: the policy's answers, the cache's bookkeeping, the records, the sampling.

Why on a CPU: on the GPU the embedded model's batch-1 step (~0.6 ms on an H200, whatever the KV) is about as
long on the host as on the device, so a mode's extra host work shows in full in its tokens/s
(benchmarks/modes/README.md). A CPU run cannot time the GPU's side, but it can rank the modes' host work and
show what a change to it gains, without a device. The tokens after the skipped replays are meaningless; the
steps' bookkeeping is the same whatever the tokens are.

    PYTHONPATH=. python benchmarks/host_step_cost.py benchmarks/host_step_cost.json

Steps that do not run as the graph (PyramidInfer's decode-time cuts) run in full; they are few, the median
passes over them, and `graph_steps` says how many steps ran as the graph.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from pyramid_core import graphs, step_graphs
from pyramid_core.bench import harness
from pyramid_core.bench.modes import mode_policies, prompts
from pyramid_core.engine import generate
from pyramid_core.models import load_model

MODES = ["baseline", "pyramid", "streaming", "h2o", "snapkv", "recurformer", "pyramid+recurformer"]


@contextmanager
def replays_skipped(skipping: list[bool]):
    """While skipping[0], a Replay returns its outputs as they stand instead of running its function, and a
    step graph's replay is a bare call, as a CUDA graph's is (step_graphs.replay: no SDPA context around it)."""
    call, replay_step = graphs.Replay.__call__, step_graphs.replay

    def maybe(self):
        return self.outputs if skipping[0] else call(self)

    graphs.Replay.__call__ = maybe
    step_graphs.replay = lambda step: step() if skipping[0] else replay_step(step)
    try:
        yield
    finally:
        graphs.Replay.__call__, step_graphs.replay = call, replay_step


def host_steps(lm, policy, batch: int, prompt: int, steps: int, warm: int = 24) -> dict:
    """Median host microseconds of a decode step with the step graph's replay skipped."""
    skipping, quiet = [False], []
    quiet_step = step_graphs.quiet_step

    def counted(req):
        answer = quiet_step(req)
        quiet.append(answer is not None)
        return answer

    step_graphs.quiet_step = counted
    try:
        with replays_skipped(skipping):
            run = warmed_run(lm, policy, batch, prompt, steps, warm, skipping)
            quiet.clear()
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                next(run)
                times.append(time.perf_counter() - start)
            run.close()
    finally:
        step_graphs.quiet_step = quiet_step
    return {"host_us_per_step": round(1e6 * statistics.median(times), 1),
            "graph_steps": sum(quiet), "steps": steps}


def warmed_run(lm, policy, batch: int, prompt: int, steps: int, warm: int, skipping: list[bool]):
    """A reserved-KV generation with `steps` decode steps left after `warm`, its replays skipped from the fifth
    step on (under replays_skipped(skipping)): the first steps capture (here: call) the graph for real."""
    run = generate(lm, prompts(lm, batch, prompt), policy=policy, max_new_tokens=warm + steps + 1,
                   reserve_kv=True, cuda_graphs=True, ahead=True)
    for i in range(warm):
        skipping[0] = i >= 4
        next(run)
    return run


def batch_rows(lm, policies: dict, batch: int, prompt: int, steps: int, rounds: int) -> list[dict]:
    """Each mode's median host step at one batch size, over interleaved rounds, against the baseline's."""
    runs = {m: [] for m in policies}
    for _ in range(rounds):
        for m, policy in policies.items():
            runs[m].append(host_steps(lm, policy, batch, prompt, steps))
    base = statistics.median(r["host_us_per_step"] for r in runs["baseline"]) if "baseline" in runs else None
    rows = []
    for m, rs in runs.items():
        us = statistics.median(r["host_us_per_step"] for r in rs)
        ratio = round(us / base, 2) if base else None
        rows.append({"mode": m, "batch": batch, "host_us_per_step": us, "rounds": [r["host_us_per_step"] for r in rs],
                     "vs_baseline": ratio, "graph_steps": rs[0]["graph_steps"], "steps": rs[0]["steps"]})
        print(f"batch {batch} {m:22s} {us:7.1f} us a step  x{ratio}  graph steps {rs[0]['graph_steps']}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--batches", default="1,8", help="rows a request, as bench modes runs them")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the host's work is one thread's; the skipped replays were the rest
    lm = load_model("embedded", device="cpu", dtype="float32")
    modes = args.modes.split(",")
    policies = mode_policies(lm, modes, "embedded", Path("/tmp/host_step_cost"))
    rows = [row for batch in map(int, args.batches.split(","))
            for row in batch_rows(lm, policies, batch, args.prompt, args.steps, args.rounds)]
    result = {"environment": harness.environment(), "model": "embedded", "prompt": args.prompt,
              "cpu_threads": 1, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
