"""Run on the GPU machine: where a decode step's time goes, engine (any mode) against transformers' generate.

    python benchmarks/profile_decode.py BATCH [MODE]     # MODE: baseline (default), pyramid, ...

Open question it is for (2026-11-26, H200): PyramidInfer modes decoded at about 1 token/s at batch 1
on the Qwen2.5-0.5B and Llama-3.2-1B shapes while the CPU shows no such slowdown.
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from pyramid_core import bench, generate  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
policy = make_policy(sys.argv[2] if len(sys.argv) > 2 else "baseline")
lm = bench.random_model("llama2-7b")
bench.warm_up(lm)
ids = bench.random_prompts(batch, 512, 32000)
for name, fn in [
    ("engine", lambda n: list(generate(lm, ids, policy=policy, max_new_tokens=n))),
    ("hf", lambda n: lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False, pad_token_id=0)),
]:
    with torch.inference_mode():
        for n in (2, 66):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn(n)
            torch.cuda.synchronize()
            print(name, n, "tokens", round(time.perf_counter() - t, 3), "s", flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn(34)
    print(name, prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14), flush=True)
    print(name, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10), flush=True)
