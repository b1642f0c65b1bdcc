"""Run on the GPU machine: Table 1's rows at given batches, without the largest-batch search.

    python benchmarks/table1_rows.py OUT.json METHOD:BATCH [METHOD:BATCH ...]

Each row runs best of two (the engine's rows with their KV reserved, as `bench table1 --reserve-kv`) in one process
under the 80 GB cap, after the same warm-up; run it once per allocator setting (PYTORCH_CUDA_ALLOC_CONF) to compare
the settings at fixed batches in one call, which two `bench table1` calls cannot (their rates move between calls).
"""

import json
import sys

sys.path.insert(0, ".")
from pyramid_core.bench import harness  # noqa: E402
from pyramid_core.bench.suites import TABLE1_METHODS, method_runner  # noqa: E402

out, rows = sys.argv[1], [arg.split(":") for arg in sys.argv[2:]]
harness.cap_memory(80)
lm = harness.random_model("llama2-13b")
harness.warm_up(lm, [TABLE1_METHODS[m](lm) for m, _ in rows if m in TABLE1_METHODS], reserve_kv=True)
results = {"environment": harness.environment(), "rows": []}
for method, batch in rows:
    run = harness.guarded(harness.best_of, 2, method_runner(method, True), lm, int(batch))
    results["rows"].append(run.__dict__ if run else {"method": method, "batch": int(batch), "failed": True})
    print(results["rows"][-1], flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=str)
