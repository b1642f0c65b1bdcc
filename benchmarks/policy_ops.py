"""What a KV policy adds to a batch-1 decode step, in dispatched aten ops and host time (issue 19).

    PYTHONPATH=. python3 benchmarks/policy_ops.py [MODE ...] [--steps 32] [--prompt 200] [--profile]

At batch 1 on a GPU a decode step is bound by kernel launches and Python, so the count of torch ops a
step dispatches is what its GPU time follows; on a CPU with the embedded model the same count is exact
and the host time is mostly Python. Each mode decodes `--steps` tokens after a `--prompt`-token prefill;
steps where some layer carried out a Keep (a PyramidInfer cut) are counted apart from the others.
"policy" is what ask_policy and the cache's apply dispatch and take; the rest of the step is the model's.
--profile prints cProfile's top functions over the decode steps (ops are then not counted).
"""

import argparse
import cProfile
import pstats
import sys
import time
from contextlib import nullcontext

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, ".")
from pyramid_core import engine, load_model  # noqa: E402
from pyramid_core.cache import LayerCache  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts aten ops, and apart those dispatched while `inside` is set (the policy path)."""

    def __init__(self):
        super().__init__()
        self.total = self.policy = 0
        self.inside = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.policy += self.inside
        return func(*args, **(kwargs or {}))


class PolicyPath:
    """Wraps ask_policy and LayerCache.apply: ops and host seconds spent there, and whether a Keep ran."""

    def __init__(self, counter: OpCounter):
        self.counter, self.seconds, self.applied = counter, 0.0, False
        self.ask, self.apply = engine.ask_policy, LayerCache.apply

    def timed(self, fn, *args):
        self.counter.inside, start = True, time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.counter.inside = False

    def __enter__(self):
        path = self
        engine.ask_policy = lambda *a: path.timed(path.ask, *a)

        def apply(layer, answer):
            path.applied = True
            return path.timed(path.apply, layer, answer)
        LayerCache.apply = apply
        return self

    def __exit__(self, *exc):
        engine.ask_policy, LayerCache.apply = self.ask, self.apply


def run(lm, mode: str, prompt: int, steps: int, profiler=None) -> dict:
    """Per decode step: ops (all, policy) and host ms (all, policy), split into cut and plain steps."""
    ids = torch.randint(3, lm.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    req = engine.start_request(lm, ids, torch.ones_like(ids), make_policy(mode))
    rows = {"plain": [], "cut": []}
    with torch.inference_mode():
        tokens = engine.step(req, ids)[0].argmax(-1)
        for _ in range(steps):
            counter = OpCounter()
            # under cProfile the ops are not counted: the dispatch mode's Python would dwarf the policy's
            with PolicyPath(counter) as path, (nullcontext() if profiler else counter):
                if profiler:
                    profiler.enable()
                start = time.perf_counter()
                logits = engine.step(req, tokens)[0]
                elapsed = time.perf_counter() - start
                if profiler:
                    profiler.disable()
            tokens = logits.argmax(-1)
            rows["cut" if path.applied else "plain"].append(
                (counter.total, counter.policy, elapsed * 1e3, path.seconds * 1e3))
    return rows


def summary(rows: list) -> str:
    if not rows:
        return "no steps"
    mean = [sum(col) / len(rows) for col in zip(*rows)]
    return (f"{len(rows):3d} steps  ops {mean[0]:7.1f} (policy {mean[1]:6.1f})  "
            f"host ms {mean[2]:6.2f} (policy {mean[3]:5.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", default=["baseline", "pyramid"])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model("embedded", device="cpu", dtype="float32")
    print(f"embedded model ({lm.config.num_hidden_layers} layers), CPU, batch 1, prompt {args.prompt}, "
          f"{args.steps} decode steps, torch {torch.__version__}")
    for mode in args.modes:
        run(lm, mode, args.prompt, 4)  # warm-up
        profiler = cProfile.Profile() if args.profile else None
        rows = run(lm, mode, args.prompt, args.steps, profiler)
        for kind, kind_rows in rows.items():
            print(f"{mode:10s} {kind:5s} {summary(kind_rows)}")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
