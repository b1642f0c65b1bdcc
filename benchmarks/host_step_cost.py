"""The host's work in a decode step, mode by mode, on a CPU: every decode step of a reserved KV runs as the
request's step graph (step_graphs.py), and here each replay is skipped, so what a step still costs is what the
host does around the graph: the policy's answers, the cache's bookkeeping, the records, the sampling.

Why on a CPU: on the GPU the embedded model's batch-1 step (~0.6 ms on an H200, whatever the KV) is about as
long on the host as on the device, so a mode's extra host work shows in full in its tokens/s
(benchmarks/modes/README.md). A CPU run cannot time the GPU's side, but it can rank the modes' host work and
show what a change to it gains, without a device. The tokens after the skipped replays are meaningless; the
steps' bookkeeping is the same whatever the tokens are.

    PYTHONPATH=. python benchmarks/host_step_cost.py benchmarks/host_step_cost.json
    PYTHONPATH=. python benchmarks/host_step_cost.py --ops [--by-site] [--modes baseline,pyramid]

--ops counts instead the device ops 20 quiet steps dispatch (a TorchDispatchMode around them), by name, or with
--by-site by the pyramid_core line that called each: on a GPU each is a launch from the host, and on the embedded
model those launches, more than this CPU's microseconds, are what a mode's extra host time is made of
(host_step_cost.md: PyramidInfer's voters moved every ~20 steps, 23 ops a step against the baseline's 15).

Steps that do not run as the graph (PyramidInfer's decode-time cuts) run in full; they are few, the median
passes over them, and `graph_steps` says how many steps ran as the graph.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


class OpCounter(TorchDispatchMode):
    """Counts each op dispatched while active, by name, or by name and the pyramid_core line that called it."""

    def __init__(self, by_site: bool):
        super().__init__()
        self.by_site, self.ops = by_site, collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[f"{func} @ {caller()}" if self.by_site else str(func)] += 1
        return func(*args, **(kwargs or {}))


def caller() -> str:
    ours = [f for f in traceback.extract_stack() if "pyramid_core" in f.filename]
    return f"{ours[-1].filename.split('pyramid_core/')[-1]}:{ours[-1].lineno}" if ours else "?"


def step_ops(lm, policy, batch: int, prompt: int, steps: int, by_site: bool, warm: int = 24) -> OpCounter:
    """The ops of `steps` quiet decode steps after `warm` (warmed_run)."""
    skipping = [False]
    with replays_skipped(skipping):
        run = warmed_run(lm, policy, batch, prompt, steps, warm, skipping)
        with OpCounter(by_site) as counter:
            for _ in range(steps):
                next(run)
        run.close()
    return counter


def print_ops(lm, policies: dict, batch: int, prompt: int, by_site: bool, steps: int = 20) -> None:
    for mode, policy in policies.items():
        counter = step_ops(lm, policy, batch, prompt, steps, by_site)
        print(f"batch {batch} {mode}: {sum(counter.ops.values()) / steps:.1f} ops a step")
        for op, n in counter.ops.most_common():
            print(f"  {n / steps:5.1f}  {op}")


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
    ap.add_argument("out", type=Path, nargs="?", help="the JSON file to write (not with --ops)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--batches", default="1,8", help="rows a request, as bench modes runs them")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ops", action="store_true", help="count the device ops of 20 quiet steps instead of timing")
    ap.add_argument("--by-site", action="store_true", help="--ops: by the pyramid_core line that called each")
    args = ap.parse_args()
    if args.out is None and not args.ops:
        ap.error("give the JSON file to write, or --ops")
    torch.set_num_threads(1)  # the host's work is one thread's; the skipped replays were the rest
    lm = load_model("embedded", device="cpu", dtype="float32")
    modes = args.modes.split(",")
    policies = mode_policies(lm, modes, "embedded", Path("/tmp/host_step_cost"))
    if args.ops:
        for batch in map(int, args.batches.split(",")):
            print_ops(lm, policies, batch, args.prompt, args.by_site)
        return
    rows = [row for batch in map(int, args.batches.split(","))
            for row in batch_rows(lm, policies, batch, args.prompt, args.steps, args.rounds)]
    result = {"environment": harness.environment(), "model": "embedded", "prompt": args.prompt,
              "cpu_threads": 1, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
