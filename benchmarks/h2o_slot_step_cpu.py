"""On a CPU: what H2O's decode step does per step and layer in the engine, the position-indexed path
against the slot-indexed one (h2o.FUSED_STEP), as the engine runs it on CUDA (benchmarks/h2o_slot_step_cpu.md).

    PYTHONPATH=. python3 benchmarks/h2o_slot_step_cpu.py [layers]

A tiny random Llama (tests/tiny_models.py) decodes through `generate` with CUDA graphs on (plain calls on
a CPU, graphs.py). The CUDA choice of kernels is emulated: the slot path runs h2o_step_triton's host
code and the position path scores_triton's, their Triton launches replaced by the PyTorch twins, whose
own ops are left out of the counts (on the GPU they are one launch each). Counted per warm decode step,
from torch.profiler: aten ops (and the possible host syncs among them) in the whole step, in the
policy's answers (policy.decode) and in the cache carrying them out (LayerCache.apply); and the host
time of those two.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import contextmanager

os.environ.setdefault("TRITON_INTERPRET", "1")  # triton imports without a GPU; no kernel is run by it

import torch  # noqa: E402
from torch.profiler import record_function  # noqa: E402

sys.path.insert(0, ".")
from pyramid_core import generate  # noqa: E402
from pyramid_core.cache import LayerCache  # noqa: E402
from pyramid_core.graphs import Replay  # noqa: E402
from pyramid_core.kernels import h2o_step as h2o_step_module  # noqa: E402
from pyramid_core.kernels import h2o_step_triton, scores_triton  # noqa: E402
from pyramid_core.policies import base, h2o  # noqa: E402
from pyramid_core.policies.h2o import H2OPolicy  # noqa: E402
from tests.h2o_kernel_standins import slot_kernels  # noqa: E402
from tests.scorer_standin import scorer_launch  # noqa: E402
from benchmarks.profiler_events import inside, profiled_steps, under_aten  # noqa: E402
from tests.tiny_models import tiny_model  # noqa: E402

# what waits for the device on CUDA (a scalar read, a data-dependent shape, a copy to the host)
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero",
            "aten::equal", "aten::_assert_async")
TWIN = "emulated Triton launch"  # the twin standing in for a kernel: one launch on the GPU
# host reads that do not dispatch an aten op on a CPU tensor (on CUDA each waits for the device)
HOST_READS = {"Tensor.tolist", "Tensor.item", "Tensor.cpu", "Tensor.numpy"}
PROMPT, NEW, WARM = 64, 24, 4
REGION = ["rest"]  # where the host is now: policy.decode, cache.apply, TWIN or the rest of the step


class FakeKernel:
    """kernel[grid](*args) like a Triton kernel; `compute(*args)` stands in for it, under TWIN."""

    seconds = 0.0  # spent in the twins: left out of the host times

    def __init__(self, compute=None):
        self.compute = compute

    def __getitem__(self, grid):
        def launch(*args, **meta):
            start = time.perf_counter()
            REGION.append(TWIN)
            with record_function(TWIN):
                if self.compute is not None:
                    self.compute(*args)
            REGION.pop()
            FakeKernel.seconds += time.perf_counter() - start
        return launch


@contextmanager
def cuda_kernel_choice():
    """The kernels' host code as on CUDA: h2o_step_triton and scores_triton, launches emulated."""
    saved = [(h2o_step_module, "kernel_fits"), (base, "recent_attention_scores"),
             (h2o_step_triton, "h2o_logits_fwd_kernel"), (h2o_step_triton, "h2o_step_fwd_kernel"),
             (scores_triton, "recent_scores_kernel")]
    saved = [(m, name, getattr(m, name)) for m, name in saved]
    h2o_step_module.kernel_fits = lambda q, k: True
    base.recent_attention_scores = scores_triton.recent_attention_scores_triton
    first, second = slot_kernels()
    h2o_step_triton.h2o_logits_fwd_kernel = FakeKernel(first)
    h2o_step_triton.h2o_step_fwd_kernel = FakeKernel(second)
    scores_triton.recent_scores_kernel = FakeKernel(scorer_launch)
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


@contextmanager
def labelled(policy):
    """policy.decode and LayerCache.apply under record_function labels, timed on the host."""
    decode, apply = policy.decode, LayerCache.apply
    host = Counter()

    def timed(label, fn, *args):
        start, twins = time.perf_counter(), FakeKernel.seconds
        REGION.append(label)
        with record_function(label):
            out = fn(*args)
        REGION.pop()
        host[label] += time.perf_counter() - start - (FakeKernel.seconds - twins)
        return out

    policy.decode = lambda ctx: timed("policy.decode", decode, ctx)
    LayerCache.apply = lambda self, answer: timed("cache.apply", apply, self, answer)
    try:
        yield host
    finally:
        del policy.decode
        LayerCache.apply = apply


def decoding(by_slot: bool, layers: int, batch: int = 1):
    """(policy, the rest of a generation's steps) after the prefill and WARM - 1 decode steps: the graphs
    are captured and every layer's slot state made by then."""
    h2o.FUSED_STEP = by_slot
    lm = tiny_model("llama", layers=layers)
    ids = torch.randint(3, lm.config.vocab_size, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
    policy = H2OPolicy(kv_budget=0.5, recent_share=0.5)
    steps = iter(generate(lm, ids, policy=policy, max_new_tokens=WARM + NEW, cuda_graphs=True))
    for _ in range(WARM):
        next(steps)
    return policy, steps


def profiled(by_slot: bool, layers: int) -> dict:
    """Per warm decode step: aten ops (top-level) in all, per layer in policy.decode and cache.apply,
    possible syncs among them, host reads (Tensor.tolist & co.), graph replays, warm-up steps."""
    policy, steps = decoding(by_slot, layers)
    reads, replays = Counter(), [0]

    def watch(frame, event, fn):  # sys.setprofile: C calls such as Tensor.tolist
        name = getattr(fn, "__qualname__", "")
        if event == "c_call" and name in HOST_READS and REGION[-1] != TWIN:
            reads[f"{REGION[-1]}:{name}"] += 1
        elif event == "call" and frame.f_code is Replay.__call__.__code__:
            replays[0] += 1

    with cuda_kernel_choice(), labelled(policy):
        records, prof = profiled_steps(steps, watch)
    n = len(records)
    ops, syncs, names = Counter(), Counter(), Counter()
    for e in prof.events():
        if not e.name.startswith("aten::") or inside(e.cpu_parent, {TWIN}) or under_aten(e):
            continue
        where = inside(e, {"policy.decode", "cache.apply"}) or "rest"
        ops[where] += 1
        names[(where, e.name)] += 1
        if e.name in SYNC_OPS:
            syncs[(where, e.name)] += 1
    return {"path": "slot" if by_slot else "position", "layers": layers, "steps": n,
            "aten_ops_per_step": round(sum(ops.values()) / n, 1),
            "policy_ops_per_layer": round(ops["policy.decode"] / n / layers, 2),
            "cache_apply_ops_per_layer": round(ops["cache.apply"] / n / layers, 2),
            "syncs_per_step": {f"{w}:{name}": c / n for (w, name), c in syncs.items()},
            "host_reads_per_step": {k: c / n for k, c in reads.items()},
            "graph_replays_per_step": replays[0] / n,
            "warmup_steps": sum(r.warmup_s > 0 for r in records),
            "policy_ops": {name: round(c / n / layers, 2) for (w, name), c in sorted(names.items())
                           if w == "policy.decode"}}


def host_us(by_slot: bool, layers: int) -> dict:
    """Host microseconds per layer and warm step in policy.decode and cache.apply (twins left out),
    without the profiler."""
    policy, steps = decoding(by_slot, layers)
    with cuda_kernel_choice(), labelled(policy) as host:
        n = sum(1 for _ in steps)
    return {f"{k}_host_us_per_layer": round(1e6 * v / n / layers, 1) for k, v in host.items()}


def main():
    layers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    torch.set_num_threads(1)
    with torch.inference_mode():
        for n in (layers, 2 * layers):
            for by_slot in (False, True):
                print({**profiled(by_slot, n), **host_us(by_slot, n)}, flush=True)


if __name__ == "__main__":
    main()
