"""Run on the GPU machine: where a step's time goes, engine in some mode against its baseline.

    python benchmarks/profile_decode.py SHAPE BATCH CONTEXT MODE[@PRESET] [MODE[@PRESET] ...]

Prints each mode's per-step times (prefill, then decode steps) and torch profiler tables of the host
and device time of the decode steps alone (the prefill runs before the profiler starts), so that a
step slower than the baseline's shows where its time goes. PROFILE_DTYPE=float16 for Table 1's dtype;
PROFILE_RESERVE=1 reserves the KV as `bench table1 --reserve-kv` does; PROFILE_NEW: tokens a run (48).
Each mode's lines also give the peak memory of its prefill and of the profiled run, and what stays
allocated after the prefill (weights and KV); the steps at which the unprofiled run's peak grew (the
allocator's own count, read on the host after each record); Python's collections of a millisecond or more
during that run (generation, ms, after which record), and the allocator's retries (a cudaMalloc that failed
until the cached blocks were freed, which stalls the host). PROFILE_DEFER_GC=0 lets full collections run
during the generations, as they did before engine.py deferred them. PROFILE_PREFILL=1 profiles each mode's
prefill instead of its decode steps (its kernel table and peak).
"""

import contextlib
import gc
import os

import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from pyramid_core import engine, generate  # noqa: E402
from pyramid_core.bench import harness as bench  # noqa: E402
from pyramid_core.bench.modes import mode_policies  # noqa: E402
from pyramid_core.policies.registry import preset_policy  # noqa: E402

if os.environ.get("PROFILE_DEFER_GC") == "0":  # full collections as Python schedules them (deferred_gc.py)
    engine.full_collections_deferred = contextlib.nullcontext


def watched_run(policy):
    """A generation's records, with (record index, peak GB) wherever the peak grew by 0.05 GB or more, Python's
    collections of 1 ms or more as (generation, ms, records made before it), and the allocator's retries."""
    records, growth, collections, started = [], [], [], {}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    retries = torch.cuda.memory_stats().get("num_alloc_retries", 0)
    peak = 0.0

    def watch(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        elif (ms := (time.perf_counter() - started["t"]) * 1e3) >= 1:
            collections.append((info["generation"], round(ms, 1), len(records)))

    gc.callbacks.append(watch)
    try:
        for record in generate(lm, ids, policy=policy, max_new_tokens=new, reserve_kv=reserve):
            records.append(record)
            now = torch.cuda.max_memory_allocated() / 1e9
            if now >= peak + 0.05:
                growth.append((len(records) - 1, round(now, 2)))
            peak = max(peak, now)
    finally:
        gc.callbacks.remove(watch)
    return records, growth, collections, torch.cuda.memory_stats().get("num_alloc_retries", 0) - retries


def profiled(run):
    """(the torch profiler's record, wall seconds, run()'s result) of run() between two device syncs."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        torch.cuda.synchronize()
    return prof, time.perf_counter() - start, result


shape, batch, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
modes = sys.argv[4:] or ["baseline", "pyramid"]
reserve, new = os.environ.get("PROFILE_RESERVE") == "1", int(os.environ.get("PROFILE_NEW", "48"))
prefill_only = os.environ.get("PROFILE_PREFILL") == "1"
lm = bench.random_model(shape, dtype=getattr(torch, os.environ.get("PROFILE_DTYPE", "bfloat16")))
ids = bench.random_prompts(batch, context, lm.config.vocab_size)
# a random shape's RecurFormer gets an untrained adapter, as in `bench modes`
plain = mode_policies(lm, [m for m in modes if "@" not in m], shape, Path(tempfile.mkdtemp()))
for mode in modes:
    name, _, preset = mode.partition("@")
    policy = preset_policy(name, preset, context, new, lm.config.num_hidden_layers) if preset else plain[mode]
    list(generate(lm, ids, policy=policy, max_new_tokens=new, reserve_kv=reserve))  # compiles kernels
    records, growth, collections, retries = watched_run(policy)
    steps = [round(r.step_time_s * 1e3, 1) for r in records]
    print(f"{mode}: prefill {steps[0]} ms, decode steps ms {steps[1:]}", flush=True)
    print(f"{mode}: peak grew (after record, GB) {growth}; collections (gen, ms, after record) {collections}; "
          f"allocator retries {retries}", flush=True)
    steps = generate(lm, ids, policy=policy, max_new_tokens=new, reserve_kv=reserve)
    torch.cuda.reset_peak_memory_stats()
    if prefill_only:
        prof, wall, _ = profiled(lambda: next(steps))
        steps.close()
        print(f"{mode}: prefill profiled in {wall * 1e3:.1f} ms, peak {torch.cuda.max_memory_allocated() / 1e9:.2f} GB",
              flush=True)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40), flush=True)
        continue
    next(steps)  # the prefill
    torch.cuda.synchronize()
    held, prefill_peak = torch.cuda.memory_allocated() / 1e9, torch.cuda.max_memory_allocated() / 1e9
    prof, wall, decoded = profiled(lambda: len(list(steps)))
    print(f"{mode}: GB after the prefill {held:.2f}, prefill peak {prefill_peak:.2f}, "
          f"run peak {torch.cuda.max_memory_allocated() / 1e9:.2f}", flush=True)
    print(mode, decoded, "decode steps profiled in", round(wall, 3), "s", flush=True)
    # the GPU's busy share of the steps: kernels (and memcpys) summed, over the wall time; well under 1 means
    # the host (launches, Python) bounds the step, near 1 that the GPU does (the profiler slows the host a little)
    busy = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()
               if str(e.device_type).endswith("CUDA"))  # the kernels' own rows (not their launching ops')
    print(f"{mode}: GPU busy {busy / 1e3 / decoded:.2f} ms of {wall * 1e3 / decoded:.2f} ms a step "
          f"({busy / 1e6 / wall:.0%})", flush=True)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25), flush=True)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30), flush=True)
