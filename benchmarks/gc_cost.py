"""What Python's cycle collector costs a generation: how long one full (generation-2) collection takes in a
process that holds the libraries and a model, and how many full collections a PyramidInfer generation triggers.

    python benchmarks/gc_cost.py OUT.json [NEW_TOKENS]

Why: Table 1's PyramidInfer run at 134 rows has one decode step of ~250-300 ms in each run, at a step that moves
between runs (benchmarks/profiles/table1_pyramid45_134_2026-12-02_*.txt); a full collection, whose time grows with
the objects the process tracks, fits that. Runs on a CPU (tiny model; the GPU machine's processes hold more objects).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyramid_core import generate  # noqa: E402
from pyramid_core.bench import harness  # noqa: E402
from pyramid_core.policies.pyramid import PyramidPolicy  # noqa: E402
from tests.test_graphs import left_padded  # noqa: E402
from tests.tiny_models import tiny_model  # noqa: E402


def full_collection_ms(repeats: int = 3) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect()
        times.append(round((time.perf_counter() - start) * 1e3, 1))
    return times


def main() -> None:
    out, new_tokens = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 200
    lm = tiny_model("llama")
    ids, mask = left_padded((64, 64))
    policy = PyramidPolicy(chunk_length=4, min_context_length=16)  # cuts every few steps, as Table 1's preset does
    list(generate(lm, ids, mask, policy=policy, max_new_tokens=40, cuda_graphs=True))  # warm
    full = []  # ms of each full collection during the timed run
    started = {}

    def watch(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            full.append(round((time.perf_counter() - started["t"]) * 1e3, 1))

    tracked = len(gc.get_objects())
    gc.callbacks.append(watch)
    start = time.perf_counter()
    list(generate(lm, ids, mask, policy=policy, max_new_tokens=new_tokens, cuda_graphs=True))
    run_s = time.perf_counter() - start
    gc.callbacks.remove(watch)
    results = {"environment": harness.environment(), "objects_tracked": tracked, "thresholds": gc.get_threshold(),
               "full_collection_ms": full_collection_ms(), "new_tokens": new_tokens, "run_s": round(run_s, 2),
               "full_collections_during_run_ms": full}
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}))


if __name__ == "__main__":
    main()
