"""On a CPU: what PyramidInfer's decode step launches per layer, as the engine runs it on CUDA
(benchmarks/pyramid_decode_ops_cpu.md; the approach of benchmarks/h2o_slot_step_cpu.py).

    PYTHONPATH=. python3 benchmarks/pyramid_decode_ops_cpu.py [prompt ...]

A tiny random Llama with one query head per KV group (as the 7B) and 4 layers decodes through `generate`
with CUDA graphs on (plain calls on a CPU, graphs.py) under PyramidPolicy's default knobs. The voters' head
mean is chosen as on CUDA (head_mean_triton's host code); its Triton launch is replaced by the PyTorch
twin, whose ops are left out (one launch on a GPU). A TorchDispatchMode counts aten ops by region:
policy.decode, cache.apply (the Keep carried out) and the rest of the step (the baseline's own eager
work); `to_device` calls (on CUDA: a pinned host buffer and a host-to-device copy) and host reads
(Tensor.tolist & co., sys.setprofile) are counted apart. Steps are split into plain steps (no layer
cuts) and cutting steps.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from contextlib import contextmanager

os.environ.setdefault("TRITON_INTERPRET", "1")  # triton imports without a GPU; no kernel is run by it

import torch  # noqa: E402

sys.path.insert(0, ".")
from pyramid_core import generate  # noqa: E402
from pyramid_core import cache as cache_module  # noqa: E402
from pyramid_core.cache import LayerCache  # noqa: E402
from pyramid_core.graphs import Replay  # noqa: E402
from pyramid_core.kernels import head_mean_triton  # noqa: E402
from pyramid_core.kernels.head_mean import head_mean_torch  # noqa: E402
from pyramid_core.policies import base, pyramid, voter_rows  # noqa: E402
from pyramid_core.policies.pyramid import PyramidPolicy  # noqa: E402
from tests.op_log import RegionLog  # noqa: E402
from tests.tiny_models import tiny_model  # noqa: E402

SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero", "aten::equal",
            "aten::_assert_async"}
HOST_READS = {"Tensor.tolist", "Tensor.item", "Tensor.cpu", "Tensor.numpy"}
# metadata only: no kernel and no allocation on a GPU
VIEWS = {"aten::slice", "aten::select", "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::expand",
         "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::alias", "aten::detach",
         "aten::permute", "aten::lift_fresh", "aten::_reshape_alias"}
ALLOC_ONLY = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
              "aten::new_empty_strided"}  # an allocation, no kernel
MAYBE_NOOP = {"aten::to", "aten::contiguous", "aten::_to_copy"}  # the same tensor back: nothing launched
LAYERS, WARM = 4, 3


def kind(op: str) -> str:
    """'view', 'alloc' (an allocation, no kernel) or 'kernel' (one launch on a GPU)."""
    return "view" if op in VIEWS or op.endswith("(no-op)") else "alloc" if op in ALLOC_ONLY else "kernel"


def allocates(op: str) -> bool:
    """Whether an op's result is a new tensor (the caching allocator is called): not a view, not in place."""
    return op not in VIEWS and not op.endswith("_") and op != "aten::copy_"


class StepLog(RegionLog):
    """Aten ops, to_device calls and host reads by (step, region); "kernel" (a twin) is left out."""

    def __init__(self):
        super().__init__("rest")
        self.step = 0
        self.ops = defaultdict(Counter)     # step -> (region, op) -> count
        self.extra = defaultdict(Counter)   # step -> (region, what) -> count
        self.acted = defaultdict(int)       # step -> layers that answered a Keep

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.where[-1] != "kernel":
            name = func._schema.name
            if name in MAYBE_NOOP and out is args[0]:
                name += " (no-op)"  # .float() of a float tensor, .contiguous() of a contiguous one
            self.ops[self.step][(self.where[-1], name)] += 1
        return out

    def watch(self, frame, event, fn):  # sys.setprofile: C calls that read the device
        if event == "c_call" and getattr(fn, "__qualname__", "") in HOST_READS and self.where[-1] != "kernel":
            self.extra[self.step][(self.where[-1], fn.__qualname__)] += 1


class FakeLaunch:
    """kernel[grid](*args) like a Triton kernel; `compute(*args)` (the twin) runs in region "kernel"."""

    def __init__(self, log, compute=None, grids=None):
        self.log, self.compute, self.grids = log, compute, grids

    def __getitem__(self, grid):
        def launch(*args, **meta):
            if self.grids is not None:
                self.grids.append(grid)
            with self.log.region("kernel"):
                if self.compute is not None:
                    self.compute(*args, **meta)
        return launch


@contextmanager
def cuda_path(log, monkeypatch_like, grids):
    """head_mean_triton's host code as on CUDA, its launch faked (its grids kept); to_device calls counted."""
    def counted_to_device(original):
        def call(*args, **kwargs):
            log.extra[log.step][(log.where[-1], "to_device")] += 1
            return original(*args, **kwargs)
        return call
    set_ = monkeypatch_like
    set_(voter_rows, "head_mean", head_mean_triton.head_mean_triton)
    set_(head_mean_triton, "head_mean_kernel",
         FakeLaunch(log, lambda logits, lse, share, rows, slot, *_, **__: head_mean_torch(logits, lse, share, rows,
                                                                                         slot), grids))
    set_(pyramid, "to_device", counted_to_device(pyramid.to_device))
    set_(cache_module, "to_device", counted_to_device(cache_module.to_device))
    replay, shared = Replay.__call__, base.PolicyState.shared

    def on_host(state, name, key, build):  # what a state builds once per step is host work on CPU tensors
        def built():
            with log.region("host build"):
                return build()
        return shared(state, name, key, built)
    set_(base.PolicyState, "shared", on_host)

    def one_launch(graph):  # a replayed graph is one launch on a GPU: its ops are left out
        log.extra[log.step][(log.where[-1], "graph replay")] += 1
        with log.region("kernel"):
            return replay(graph)
    set_(Replay, "__call__", one_launch)
    yield


class Patches:
    """A small monkeypatch for the script (pytest's in the test)."""

    def __init__(self):
        self.saved = []

    def __call__(self, obj, name, value):
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self):
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)


def logged_run(prompt: int, new: int, log: StepLog, patch, layers: int = LAYERS, baseline: bool = False):
    """Run generate under the log; regions for policy.decode and LayerCache.apply. Returns the kept
    counts per layer at the end and the step of every record."""
    policy = None if baseline else PyramidPolicy()
    if policy is not None:
        decode = policy.decode

        def logged_decode(ctx):
            with log.region("policy.decode"):
                answer = decode(ctx)
            log.acted[log.step] += answer is not None
            return answer
        patch(policy, "decode", logged_decode)
    apply = LayerCache.apply

    def logged_apply(layer, answer):
        with log.region("cache.apply"):
            return apply(layer, answer)
    patch(LayerCache, "apply", logged_apply)
    lm = tiny_model("llama", layers=layers, num_key_value_heads=4, max_position_embeddings=prompt + new + 8)
    ids = torch.randint(3, lm.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    records = generate(lm, ids, policy=policy, max_new_tokens=WARM + new, cuda_graphs=True)
    tokens = []
    for _ in range(WARM):  # the prefill and the graphs' capture
        tokens.append(next(records).token_ids)
    log.step = 1
    with log:
        sys.setprofile(log.watch)
        try:
            for record in records:  # a step's ops are logged before its record comes
                tokens.append(record.token_ids)
                log.step += 1
        finally:
            sys.setprofile(None)
    return tokens


def summarise(log: StepLog, layers: int) -> dict:
    """Per layer and step, by kind of step: kernels, allocations, views by region; op names of the
    policy and the cache; syncs, host reads, to_device calls."""
    kinds = defaultdict(list)
    for step, ops in log.ops.items():
        label = "cut" if log.acted[step] else "plain"
        kinds[label].append(step)
    out = {}
    for label, steps in sorted(kinds.items()):
        total = Counter()
        for step in steps:
            total.update(log.ops[step])
            total.update({("extra", k): v for k, v in log.extra[step].items()})
        per = lambda n: round(n / len(steps) / layers, 2)
        row = {"steps": len(steps), "layers acting": round(sum(log.acted[s] for s in steps) / len(steps), 2)}
        for region in ("policy.decode", "cache.apply", "rest"):
            mine = {op: n for (where, op), n in total.items() if where == region}
            row[region] = {"kernels": per(sum(n for op, n in mine.items() if kind(op) == "kernel")),
                           "allocations": per(sum(n for op, n in mine.items() if allocates(op))),
                           "views": per(sum(n for op, n in mine.items() if kind(op) == "view")),
                           "syncs": per(sum(n for op, n in mine.items() if op in SYNC_OPS))}
            if region != "rest":
                row[region]["ops"] = {op: per(n) for op, n in sorted(mine.items()) if kind(op) != "view"}
        extra = {key[1]: n for key, n in total.items() if key[0] == "extra"}
        row["host reads, to_device per step"] = {f"{w}:{what}": round(n / len(steps), 2)
                                                 for (w, what), n in sorted(extra.items())}
        out[label] = row
    return out


def measure(prompt: int, new: int, baseline: bool = False, layers: int = LAYERS) -> dict:
    log, patch, grids = StepLog(), Patches(), []
    try:
        with cuda_path(log, patch, grids):
            logged_run(prompt, new, log, patch, layers, baseline)
    finally:
        patch.undo()
    return {"prompt": prompt, "mode": "baseline" if baseline else "pyramid", "layers": layers,
            "head mean grids, first cut": grids[:layers],
            **summarise(log, layers)}


def main():
    prompts = [int(a) for a in sys.argv[1:]] or [1024]
    torch.set_num_threads(1)
    for prompt in prompts:
        # the first cut comes once the window's 1 + 0.2 n tokens and a chunk have left it (0.8 a step):
        # step 277 at 1k; bench modes' 64 new tokens never get there
        new = int((1.25 * (1 + 0.2 * prompt) + 20) * 1.25)
        for baseline in (True, False):
            result = measure(prompt, new, baseline)
            print("\n".join(f"{k}: {v}" for k, v in result.items()), "\n", flush=True)


if __name__ == "__main__":
    main()
