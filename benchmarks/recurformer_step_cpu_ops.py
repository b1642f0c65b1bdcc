"""On a CPU: what a RecurFormer decode step does per layer in the engine outside its CUDA graphs, against
the baseline's (benchmarks/recurformer_step_cpu_ops.md).

    PYTHONPATH=. python3 benchmarks/recurformer_step_cpu_ops.py

A tiny random Llama shaped like Llama-2-7B in the ways that matter here (as many KV heads as query
heads, so 25% of the groups is several groups a layer and they run as one StackedRNN) decodes through
`generate` with cuda_graphs=True (plain calls on a CPU, graphs.py). The CUDA path is emulated where it
differs: stacked.fused_step_fits is true and step_triton's kernel launch is replaced by the PyTorch twin
(RNNHeads.step), whose ops are left out of the counts (one launch on the GPU); the work inside a graph
replay is left out too (one launch on the GPU). Counted per warm decode step, from torch.profiler:
top-level aten ops outside the graphs by region (graph plumbing, attention, cache, merge, policy, rest)
and by layer kind (with replaced groups or all kept); kernels and allocations below autograd (a
TorchDispatchMode: what a GPU would launch and allocate); possible syncs,
host reads (Tensor.tolist & co., via sys.setprofile) and graph replays by kind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # triton imports without a GPU; no kernel is run by it

import torch  # noqa: E402
from torch.profiler import record_function  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, ".")
from pyramid_core import engine, generate, graphs, layers  # noqa: E402
from pyramid_core.bench.harness import spread_groups, untrained_adapter  # noqa: E402
from pyramid_core.cache import LayerCache  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402
from pyramid_core.recurformer import stacked, step_triton  # noqa: E402
from pyramid_core.recurformer.rnn import RNNHeads  # noqa: E402
from benchmarks.profiler_events import inside, profiled_steps, under_aten  # noqa: E402
from tests.tiny_models import tiny_model  # noqa: E402

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero",
            "aten::equal", "aten::_assert_async")
HOST_READS = {"Tensor.tolist", "Tensor.item", "Tensor.cpu", "Tensor.numpy"}
TWIN, REPLAY = "emulated Triton launch", "graph replay"
# 7B-like in the ways that matter: H_kv == H, so 25% of the groups is 2 of a layer's 8 (one StackedRNN)
SHAPE = dict(hidden_size=128, num_attention_heads=8, num_key_value_heads=8, intermediate_size=256)
PROMPT, NEW, WARM = 64, 16, 4
# graphs.recurrent and graphs.post: the stages before this change (HEAD b99e9b4), graphs.after_attention after
REGIONS = ("graphs.pre", "graphs.recurrent", "graphs.post", "graphs.after_attention", "attention", "merge_recurrent",
           "cache.append", "cache.view", "ask_policy", "record_layer")
STACK = ["rest"]  # the region the host is in now


# ----------------------------------------------------------------------------- the model and adapter

def model(layers_: int):
    return tiny_model("llama", layers=layers_, **SHAPE)


# ----------------------------------------------------------------------------- the CUDA path, emulated

class FakeKernel:
    """rnn_step_fwd_kernel[grid](*args): the twin computes the step under TWIN (one launch on a GPU)."""

    last = {}  # the stack and its step's x and positions, from StackedRNN.step
    seconds = 0.0  # spent in the twin: left out of the host times

    def __getitem__(self, grid):
        def launch(proj, pos, state, y, *_, **meta):
            start = time.perf_counter()
            STACK.append(TWIN)
            with record_function(TWIN):
                rnn, x, positions = FakeKernel.last["args"]
                y_new, s_new = RNNHeads.step(rnn, x, positions, state.clone())
                y.copy_(y_new)
                state.copy_(s_new)
            STACK.pop()
            FakeKernel.seconds += time.perf_counter() - start
        return launch


@contextmanager
def cuda_step_choice():
    """StackedRNN.step takes its CUDA path (projection + stacked_step_triton), the launch emulated."""
    step, fits, kernel = stacked.StackedRNN.step, stacked.fused_step_fits, step_triton.rnn_step_fwd_kernel

    def remembering(self, x, positions, state):
        FakeKernel.last["args"] = (self, x, positions)
        return step(self, x, positions, state)

    stacked.StackedRNN.step, stacked.fused_step_fits = remembering, lambda x, state: True
    step_triton.rnn_step_fwd_kernel = FakeKernel()
    try:
        yield
    finally:
        stacked.StackedRNN.step, stacked.fused_step_fits, step_triton.rnn_step_fwd_kernel = step, fits, kernel


# ----------------------------------------------------------------------------- labels

def wrap(owner, name: str, label: str, stack: ExitStack, label_of=None):
    """owner.name runs under a record_function label (label_of(args) gives it, else `label`)."""
    fn = getattr(owner, name, None)
    if fn is None:  # the other version of the engine: graphs.py before or after 2026-11-30's change
        return

    def labelled(*args, **kwargs):
        tag = label_of(args) if label_of else label
        STACK.append(tag)
        try:
            with record_function(tag):
                return fn(*args, **kwargs)
        finally:
            STACK.pop()

    setattr(owner, name, labelled)
    stack.callback(setattr, owner, name, fn)


@contextmanager
def labels(replaced_layers: set):
    """Every region under a label; each layer_forward under 'layer:replaced' or 'layer:kept'."""
    with ExitStack() as stack:
        wrap(engine, "layer_forward", "", stack,
             lambda args: "layer:replaced" if args[1] in replaced_layers else "layer:kept")
        wrap(graphs.Replay, "__call__", REPLAY, stack)
        for name in ("pre", "recurrent", "post", "after_attention"):
            wrap(graphs.DecodeGraphs, name, f"graphs.{name}", stack)
        wrap(layers, "attention", "attention", stack)
        wrap(layers, "merge_recurrent", "merge_recurrent", stack)
        wrap(LayerCache, "append", "cache.append", stack)
        wrap(LayerCache, "view", "cache.view", stack)
        wrap(engine, "ask_policy", "ask_policy", stack)
        wrap(engine, "record_layer", "record_layer", stack)
        yield


# ----------------------------------------------------------------------------- counting

class Launches(TorchDispatchMode):
    """Per (layer kind, region): ops below autograd that launch a kernel on a GPU (all but views and
    empty tensors) and those that allocate (a result that aliases no input; empty tensors included).
    Composite ops arrive decomposed here (a no-op `to` is nothing), so this is closer to what a GPU
    launches than the profiler's top-level ops."""

    def __init__(self):
        super().__init__()
        self.kernels, self.allocations = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if TWIN in STACK or REPLAY in STACK or func.__name__.startswith("_record_function"):
            return out  # a graph's or a kernel's work, or the labels themselves
        where = (next((t for t in STACK if t.startswith("layer:")), "outside layers"),
                 next((t for t in reversed(STACK) if t in REGIONS), "rest"))
        returns = func._schema.returns
        aliased = [r.alias_info is not None for r in returns]
        empty = "empty" in func.__name__
        if not empty and not (all(aliased) and not any(r.alias_info.is_write for r in returns)):
            self.kernels[where] += 1
        fresh = sum(1 for r, a in zip(returns, aliased) if not a and "Tensor" in str(r.type))
        self.allocations[where] += fresh
        return out


def decoding(lm, policy, batch: int):
    ids = torch.randint(3, lm.config.vocab_size, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
    steps = iter(generate(lm, ids, policy=policy, max_new_tokens=WARM + NEW, cuda_graphs=True))
    for _ in range(WARM):  # prefill, then steps that capture the graphs
        next(steps)
    return steps


def counted(mode: str, layers_: int, groups: list, batch: int = 1, directory: Path | None = None) -> dict:
    """Per warm decode step: aten ops outside the graphs by (layer kind, region), allocations, syncs,
    host reads and graph replays by kind."""
    lm = model(layers_)
    knobs = {"adapter": untrained_adapter(lm, groups, directory)} if mode == "recurformer" else {}
    replaced = {layer for layer, _ in groups} if mode == "recurformer" else set()
    with cuda_step_choice():  # the graphs are made on the CUDA path too
        steps = decoding(lm, make_policy(mode, knobs), batch)
    reads, replays = Counter(), Counter()
    kinds = {}  # id(Replay) -> pre / recurrent / post

    def watch(frame, event, fn):
        name = getattr(fn, "__qualname__", "")
        if event == "c_call" and name in HOST_READS and STACK[-1] not in (TWIN, REPLAY):
            reads[f"{STACK[-1]}:{name}"] += 1
        elif event == "call" and frame.f_code.co_name == "labelled" and frame.f_locals.get("label") == REPLAY:
            args = frame.f_locals.get("args") or ()
            if args:
                replays[kinds.get(id(args[0]), "?")] += 1

    with cuda_step_choice(), labels(replaced):
        (_, dg), = lm.decode_graphs.entries.items()
        for kind in ("pre", "recurrent", "post"):
            kinds.update({id(r): kind for r in getattr(dg, f"{kind}_graphs", ()) if r is not None})
        with Launches() as launches:
            records, prof = profiled_steps(steps, watch)
    n = len(records)
    layer_kinds = ("layer:replaced", "layer:kept")
    n_layers = {"layer:replaced": len(replaced), "layer:kept": layers_ - len(replaced)}
    ops, names, syncs = Counter(), Counter(), Counter()
    kernels, allocs = launches.kernels, launches.allocations
    for e in prof.events():
        if inside(e, {TWIN, REPLAY}):
            continue
        kind = inside(e, layer_kinds) or "outside layers"
        region = inside(e, REGIONS) or "rest"
        if not e.name.startswith("aten::") or under_aten(e):
            continue
        ops[(kind, region)] += 1
        names[(kind, region, e.name)] += 1
        if e.name in SYNC_OPS:
            syncs[(kind, region, e.name)] += 1

    def per(counter, kind):
        div = n * (n_layers.get(kind) or 1)
        return {region: round(c / div, 2) for (k, region), c in sorted(counter.items()) if k == kind}

    return {"mode": mode, "layers": layers_, "replaced_layers": sorted(replaced), "batch": batch, "steps": n,
            "warmup_steps": sum(r.warmup_s > 0 for r in records),
            "aten_ops_per_step": round(sum(ops.values()) / n, 1),
            "kernels_per_step": round(sum(kernels.values()) / n, 1),
            "allocations_per_step": round(sum(allocs.values()) / n, 1),
            "graph_replays_per_step": {k: v / n for k, v in replays.items()},
            "syncs_per_step": {"/".join(k): c / n for k, c in syncs.items()},
            "host_reads_per_step": {k: c / n for k, c in reads.items()},
            **{f"ops_per_{k.split(':')[-1]}_layer": per(ops, k) for k in layer_kinds if n_layers.get(k)},
            **{f"kernels_per_{k.split(':')[-1]}_layer": per(kernels, k) for k in layer_kinds if n_layers.get(k)},
            **{f"allocations_per_{k.split(':')[-1]}_layer": per(allocs, k) for k in layer_kinds if n_layers.get(k)},
            "ops_outside_layers_per_step": per(ops, "outside layers"),
            "kernels_outside_layers_per_step": per(kernels, "outside layers"),
            "op_names_per_replaced_layer": {f"{r}:{name}": round(c / n / max(1, len(replaced)), 2)
                                            for (k, r, name), c in sorted(names.items()) if k == "layer:replaced"}}


@contextmanager
def replays_launch_only():
    """A replay hands back its outputs without running its work: on a GPU the host's share of a replay
    is one launch. The outputs are stale, so the tokens are garbage; only the host time means anything."""
    call = graphs.Replay.__call__
    graphs.Replay.__call__ = lambda self: self.outputs
    try:
        yield
    finally:
        graphs.Replay.__call__ = call


def host_us(mode: str, layers_: int, groups: list, directory: Path | None = None, batch: int = 1) -> float:
    """Host microseconds per warm decode step outside the graphs' work (what a GPU's host still runs,
    but for the replays' launches), without the profiler; the best of 3 runs: two cores are noisy."""
    lm = model(layers_)
    knobs = {"adapter": untrained_adapter(lm, groups, directory)} if mode == "recurformer" else {}
    best = float("inf")
    for _ in range(3):
        with cuda_step_choice():
            steps = decoding(lm, make_policy(mode, knobs), batch)
            with replays_launch_only():
                start = time.perf_counter()
                n = sum(1 for _ in steps)
                best = min(best, (time.perf_counter() - start) / n)
    return round(1e6 * best, 1)


def main():
    torch.set_num_threads(1)
    L, H = 4, SHAPE["num_key_value_heads"]
    per_layer = Counter(layer for layer, _ in spread_groups(32, 32, 0.25))
    print("7B shape (32 layers x 32 KV heads), 25% random adapter:", len(per_layer), "layers with replaced groups,",
          sorted(set(per_layer.values())), "groups each")
    cases = {"all layers replaced (25% random)": spread_groups(L, H, 0.25),
             "layers 0 and 2 replaced (2 groups each), 1 and 3 kept": [[0, 0], [0, 4], [2, 1], [2, 5]]}
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(counted("baseline", L, [])), flush=True)
        for i, (title, groups) in enumerate(cases.items()):
            print(title, json.dumps(counted("recurformer", L, groups, directory=Path(tmp) / f"a{i}")), flush=True)
        print("batch 8", json.dumps(counted("recurformer", L, cases["all layers replaced (25% random)"], 8,
                                            Path(tmp) / "b8")), flush=True)
        print("host us per warm step outside the graphs, baseline / recurformer 25%:", host_us("baseline", L, []),
              host_us("recurformer", L, cases["all layers replaced (25% random)"], Path(tmp) / "t"), flush=True)


if __name__ == "__main__":
    main()
