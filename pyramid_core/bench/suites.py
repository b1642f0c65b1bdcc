"""The benchmark suites behind `pyramid bench SUITE`: each measures on a GPU (random weights in real
models' shapes) and writes JSON and a Markdown table under --out (benchmarks/ by default)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..policies.full import FullPolicy
from ..policies.registry import make_policy, preset_policy
from . import harness
from .overhead import measure_overhead
from .roofline import suite_roofline
from .targets import suite_targets


def suite_engine(args) -> dict:
    """The engine's baseline against transformers' generate: Llama-2-7B shape, 512 + 256."""
    lm = harness.random_model("llama2-7b")
    harness.warm_up(lm)
    runs = []
    for batch in [int(b) for b in (args.batches or "1,8,32").split(",")]:
        runs.append(harness.best_of(2, harness.run_hf, lm, batch, 512, 256))
        runs.append(harness.best_of(2, harness.run_engine, lm, FullPolicy(), "engine-baseline", batch, 512, 256))
    results = {"environment": harness.environment(), "shape": "llama2-7b", "dtype": "float16", "runs": runs}
    harness.write(results, Path(args.out), "engine_vs_hf", harness.runs_table(runs))
    return results


TABLE1_METHODS = {  # name -> policy for a model, at the table's 512 + 256
    "engine-baseline": lambda lm: FullPolicy(),
    "pyramid-default": lambda lm: make_policy("pyramid"),
    "pyramid-13b-config": lambda lm: make_policy("pyramid", preset="paper-13b"),
    "pyramid-45": lambda lm: preset_policy("pyramid", "table1-45", 512, 256, lm.config.num_hidden_layers),
}


EAGER = "-eager"  # a method name with this suffix decodes without CUDA graphs (graphs.py)
SDPA = "-sdpa"    # ... or with SDPA's decode attention instead of the Triton kernel (kernels/decode_triton.py)


RESERVE = "+reserve"  # an engine row's label when its KV is reserved (--reserve-kv)


def method_runner(name, reserve_kv: bool = False):
    """A Table 1 method's run of 512 + 256 at a batch, (lm, batch) -> Run. reserve_kv: engine rows reserve their
    KV (cache.py); hf-generate rows cannot (transformers' cache)."""
    if name == "hf-generate":
        return lambda lm, b: harness.run_hf(lm, b, 512, 256)
    policy = TABLE1_METHODS[name.removesuffix(EAGER).removesuffix(SDPA)]
    label = name + (RESERVE if reserve_kv else "")
    return lambda lm, b: harness.run_engine(lm, policy(lm), label, b, 512, 256, cuda_graphs=not name.endswith(EAGER),
                                          decode_kernel=not name.endswith(SDPA), reserve_kv=reserve_kv)


def max_batch(lm, name: str, start: int, cap: int = 512, reserve_kv: bool = False) -> tuple[int, object]:
    """Largest batch that runs 512 + 256 under the memory cap: doubling, then bisection to within
    ~1.5% (2 sequences at batch 128)."""
    runner = method_runner(name, reserve_kv)
    best, best_run, low, high = 0, None, 0, None
    batch = start
    while batch <= cap:
        run_ = harness.guarded(runner, lm, batch)
        if run_ is None:
            high = batch
            break
        best, best_run, low = batch, run_, batch
        batch *= 2
    while high is not None and high - low > max(2, low // 64):
        mid = (low + high) // 2
        run_ = harness.guarded(runner, lm, mid)
        if run_ is None:
            high = mid
        else:
            best, best_run, low = mid, run_, mid
    again = harness.guarded(runner, lm, best) if best else None  # the search's run paid for first-use costs
    return best, max((r for r in (best_run, again) if r), key=lambda r: r.tokens_per_s, default=None)


RESERVE_NOTE = {
    False: "KV grows in blocks and compaction reallocates (no --reserve-kv).",
    True: f"Engine rows ({RESERVE}) reserve their KV: each layer sized once for what its prefill left plus "
          "the most the policy will add over the 256 new tokens (all of them for the baseline, whose layers are "
          "sized before the prefill; PyramidInfer's plan counts its decode-time cuts), never reallocated, so KV "
          "GB held is the reserve. hf-generate rows cannot reserve (transformers' generate grows its own "
          "cache): they run as without the flag.",
}


def suite_table1(args) -> dict:
    """The paper's Table 1 (Llama-2-13B shape, batch 32, 512 + 256), then the largest batch for each.

    Results are written after every measurement, so a run cut off by a time limit keeps what it has.
    --reserve-kv: every engine row reserves its KV (each layer sized once after its prefill, never
    reallocated: issue 19's allocator fragmentation); hf-generate rows run as always, since
    transformers' generate grows its own cache. Written under a name of its own.
    """
    harness.cap_memory(args.memory_cap_gb)
    lm = harness.random_model("llama2-13b")
    reserve = args.reserve_kv
    harness.warm_up(lm, [factory(lm) for factory in TABLE1_METHODS.values()], reserve_kv=reserve)
    methods = ["hf-generate", *TABLE1_METHODS]
    # the engine without CUDA graphs too, so the table separates what graphs give from what compression gives
    at32_methods = args.batch32_methods.split(",") if args.batch32_methods else \
        [*methods, "engine-baseline" + EAGER, "pyramid-45" + EAGER, "engine-baseline" + SDPA, "pyramid-45" + SDPA]
    at32, maxed = [], {}
    searched = [] if args.skip_max_batch else (args.methods.split(",") if args.methods else methods)
    results = {"environment": harness.environment(), "shape": "llama2-13b", "dtype": "float16",
               "memory_cap_gb": args.memory_cap_gb, "reserve_kv": reserve, "reserve_kv_note": RESERVE_NOTE[reserve],
               "full_kv_gb_batch32": harness.full_kv_gb(lm, 32, 767), "batch32": at32, "max_batch": maxed}
    name = "table1_llama2_13b" + ("_batch32" if args.skip_max_batch else "") + ("_reserve_kv" if reserve else "")
    for m in at32_methods:
        at32.append(harness.guarded(harness.best_of, 2, method_runner(m, reserve), lm, 32))
        _write_table1(results, args, name, f"batch 32 {m}")
    for m in searched:
        t0 = time.perf_counter()
        b, r = max_batch(lm, m, start=32, reserve_kv=reserve)
        maxed[m] = {"max_batch": b, "run": r, "search_s": round(time.perf_counter() - t0, 1)}
        _write_table1(results, args, name, f"largest batch {m}: {b}")
    return results


def _write_table1(results: dict, args, name: str, done: str) -> None:
    at32, maxed = results["batch32"], results["max_batch"]
    alloc = results["environment"].get("cuda_alloc_conf")
    table = f"{results['reserve_kv_note']} PYTORCH_CUDA_ALLOC_CONF: {alloc or 'unset'}.\n\n" + \
        "## batch 32\n\n" + harness.runs_table([r for r in at32 if r]) + "\n\n## largest batch\n\n" + \
        harness.runs_table([v["run"] for v in maxed.values() if v["run"]])
    harness.write(results, Path(args.out), name, table)
    print(f"{time.strftime('%H:%M:%S')} {done}", flush=True)


def suite_prefill8k(args) -> dict:
    """Prefill peak memory at an 8k-token prompt: baseline against PyramidInfer (Llama-2-7B shape)."""
    lm = harness.random_model("llama2-7b")
    pyramid_45 = preset_policy("pyramid", "table1-45", 8192, 2, lm.config.num_hidden_layers)
    harness.warm_up(lm, [make_policy("pyramid"), pyramid_45])
    runs = []
    for name, policy in [("engine-baseline", FullPolicy()), ("pyramid-default", make_policy("pyramid")),
                         ("pyramid-45", pyramid_45)]:
        runs.append(harness.guarded(harness.run_engine, lm, policy, name, 1, 8192, 2))
    runs.insert(0, harness.guarded(harness.run_hf, lm, 1, 8192, 2))
    results = {"environment": harness.environment(), "shape": "llama2-7b", "runs": runs}
    harness.write(results, Path(args.out), "prefill_8k", harness.runs_table([r for r in runs if r]))
    return results


def suite_overhead(args) -> dict:
    """Time spent scoring and selecting, as a share of a prefill and of a decode step."""
    lm = harness.random_model("llama2-7b")
    harness.warm_up(lm, [make_policy("pyramid")])
    results = {"environment": harness.environment(), "shape": "llama2-7b",
               "runs": [measure_overhead(lm, make_policy("pyramid"), batch, 512, 256) for batch in (1, 8, 32)]}
    rows = ["| batch | prefill s | policy s in prefill | share | decode step ms | policy ms per step | share |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        rows.append(f"| {r['batch']} | {r['prefill_s']:.3f} | {r['prefill_policy_s']:.4f} | "
                    f"{r['prefill_share']:.1%} | {r['decode_step_ms']:.2f} | {r['decode_policy_ms']:.3f} | "
                    f"{r['decode_share']:.1%} |")
    harness.write(results, Path(args.out), "selection_overhead", "\n".join(rows))
    return results


def suite_recurformer(args) -> dict:
    """Memory against context length and decode tokens/s at long context, every mode, two model shapes."""
    import tempfile

    from ..policies.recurformer import PyramidRecurFormerPolicy, RecurFormerPolicy

    contexts = [int(c) for c in (args.batches or "1024,4096,16384,32768").split(",")]
    new_tokens = 32
    results = {"environment": harness.environment(), "new_tokens": new_tokens, "batch": 1, "runs": []}
    rows = ["| shape | mode | context | KV MiB (held, incl. state) | peak GB | decode tokens/s | prefill s |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for shape in ("qwen2.5-0.5b", "llama3.2-1b"):
        lm = harness.random_model(shape, dtype=torch.bfloat16)
        tmp = Path(tempfile.mkdtemp())
        a25, a50 = (harness.random_adapter(lm, share, tmp / f"a{int(share * 100)}") for share in (0.25, 0.5))
        modes = {"baseline": FullPolicy(), "pyramid": make_policy("pyramid"),
                 "recurformer-25%": RecurFormerPolicy(adapter=a25), "recurformer-50%": RecurFormerPolicy(adapter=a50),
                 "pyramid+recurformer-50%": PyramidRecurFormerPolicy(adapter=a50)}
        harness.warm_up(lm, list(modes.values()))
        print(shape, "warmed up", flush=True)
        for context in contexts:
            for mode, policy in modes.items():
                # best of two: the first run at a new length may include kernel autotuning
                run_ = harness.guarded(harness.best_of, 2, harness.run_engine, lm, policy, mode, 1, context, new_tokens)
                if run_ is None:
                    continue
                decode_s = run_.seconds - run_.prefill_s
                entry = {"shape": shape, "mode": mode, "context": context, "kv_mib": run_.kv_gb * 1e9 / 2**20,
                         "peak_gb": run_.peak_memory_gb, "decode_tokens_per_s": (new_tokens - 1) / decode_s,
                         "prefill_s": run_.prefill_s}
                results["runs"].append(entry)
                print(entry, flush=True)
                rows.append(f"| {shape} | {mode} | {context} | {entry['kv_mib']:.1f} | {entry['peak_gb']:.2f} | "
                            f"{entry['decode_tokens_per_s']:.1f} | {entry['prefill_s']:.3f} |")
            harness.write(results, Path(args.out), "recurformer_memory", "\n".join(rows))
        del lm
    return results


def suite_modes(args) -> dict:
    """Every mode's decode tokens/s against the baseline's: batch 1/8 x prompt 1k/8k x three shapes, each cell
    the median of --repeats interleaved rounds or more, until each mode has decoded --min-decode-s (modes.py)."""
    from .modes import Grid, run_grid

    grid = Grid(new_tokens=64 if args.quick else args.new_tokens, repeats=args.repeats,
                min_decode_s=args.min_decode_s, policy_tokens=args.policy_tokens, reserve_kv=args.reserve_kv)
    if args.shapes:
        grid.shapes = tuple(args.shapes.split(","))
    if args.modes:
        grid.modes = tuple(args.modes.split(","))
    if args.batches:
        grid.batches = tuple(int(b) for b in args.batches.split(","))
    if args.prompts:
        grid.prompts = tuple(int(p) for p in args.prompts.split(","))
    # a split run (--shapes) writes its own files, so two calls never overwrite each other
    name = "modes" + ("_quick" if args.quick else "") + ("_" + "_".join(grid.shapes) if args.shapes else "") \
        + ("_reserve_kv" if args.reserve_kv else "")
    return run_grid(grid, Path(args.out), name=name.replace(".", ""))


SUITES = {"engine": suite_engine, "table1": suite_table1, "prefill8k": suite_prefill8k,
          "overhead": suite_overhead, "recurformer": suite_recurformer, "modes": suite_modes,
          "roofline": suite_roofline, "targets": suite_targets}
NO_GPU = {"targets"}  # reads what the others wrote
