"""The device ops a decode step launches from the host, mode by mode, on a CPU: every op torch dispatches
while the engine runs a quiet step (the step graph's replay skipped, as in host_step_cost.py), counted with a
TorchDispatchMode. On a GPU each of them is a launch from the host, and on the embedded model, whose step the
host bounds, launches are what a mode's extra host time is made of (benchmarks/host_step_cost.md: PyramidInfer's
voters moved every ~20 steps, 23 ops a step against the baseline's 15).

    PYTHONPATH=. python benchmarks/host_step_ops.py [--modes baseline,pyramid] [--by-site]

--by-site names each op's innermost pyramid_core line, to find where a mode's extra ops come from.
"""

from __future__ import annotations

import argparse
import collections
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from host_step_cost import MODES, replays_skipped, warmed_run
from pyramid_core.bench.modes import mode_policies
from pyramid_core.models import load_model


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
    """The ops of `steps` quiet decode steps after `warm` (host_step_cost.warmed_run)."""
    skipping = [False]
    with replays_skipped(skipping):
        run = warmed_run(lm, policy, batch, prompt, steps, warm, skipping)
        with OpCounter(by_site) as counter:
            for _ in range(steps):
                next(run)
        run.close()
    return counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--by-site", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model("embedded", device="cpu", dtype="float32")
    modes = args.modes.split(",")
    for mode, policy in mode_policies(lm, modes, "embedded", Path("/tmp/host_step_ops")).items():
        counter = step_ops(lm, policy, args.batch, args.prompt, args.steps, args.by_site)
        print(f"{mode}: {sum(counter.ops.values()) / args.steps:.1f} ops a step")
        for op, n in counter.ops.most_common():
            print(f"  {n / args.steps:5.1f}  {op}")


if __name__ == "__main__":
    main()
