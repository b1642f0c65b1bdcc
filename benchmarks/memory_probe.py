"""Where the memory of a Table 1 run goes, under the 80 GB cap: allocated vs reserved peaks, and for a
batch that does not fit, what the failing allocation asked for and how much the allocator held unused.

    python benchmarks/memory_probe.py OUT.json pyramid-45:116,124 hf-generate:56,60

Run it once with the default allocator and once with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
to see how much of the cap fragmentation takes (the setting is read when CUDA starts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyramid_core.bench import harness as bench  # noqa: E402
from pyramid_core.bench.suites import method_runner  # noqa: E402

GB = 1e9


def stats() -> dict:
    s = torch.cuda.memory_stats()
    return {"allocated_gb": s["allocated_bytes.all.current"] / GB,
            "reserved_gb": s["reserved_bytes.all.current"] / GB,
            "peak_allocated_gb": s["allocated_bytes.all.peak"] / GB,
            "peak_reserved_gb": s["reserved_bytes.all.peak"] / GB,
            "inactive_split_gb": s["inactive_split_bytes.all.current"] / GB,
            "alloc_retries": s["num_alloc_retries"], "ooms": s["num_ooms"]}


def probe(lm, method: str, batch: int) -> dict:
    try:
        run = method_runner(method)(lm, batch)
        return {"method": method, "batch": batch, "fits": True, "tokens_per_s": run.tokens_per_s, **stats()}
    except torch.OutOfMemoryError as error:
        at_failure = stats()
        bench._reset()
        return {"method": method, "batch": batch, "fits": False, "error": str(error).split("\n")[0][:400],
                **at_failure}


def main() -> None:
    out, plans = Path(sys.argv[1]), sys.argv[2:]
    bench.cap_memory(80)
    lm = bench.random_model("llama2-13b")
    bench.warm_up(lm)
    results = {"environment": bench.environment(), "probes": []}
    for plan in plans:
        method, batches = plan.split(":")
        for batch in map(int, batches.split(",")):
            results["probes"].append(probe(lm, method, batch))
            print(json.dumps(results["probes"][-1]), flush=True)
            out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
