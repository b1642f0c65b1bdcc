"""Run on the GPU machine: the Triton scorer and the fla scan against their PyTorch twins, to JSON.

    python benchmarks/check_kernels.py benchmarks/kernel_check.json
"""

import json
import sys

import torch
import torch.utils.benchmark

sys.path.insert(0, ".")
from pyramid_core.bench import environment  # noqa: E402
from pyramid_core.kernels.scores import recent_attention_scores, recent_attention_scores_torch  # noqa: E402
from tests.test_scores import make_inputs  # noqa: E402

CASES = [(1, 4, 4, 3, 20, 64, torch.float16), (2, 32, 8, 103, 500, 128, torch.bfloat16),
         (3, 40, 40, 17, 1000, 128, torch.float16), (2, 14, 2, 65, 4097, 64, torch.bfloat16),
         (32, 40, 40, 103, 768, 128, torch.float16), (1, 32, 32, 1639, 8192, 128, torch.float16)]

rows = []
for B, H, H_kv, W, T, D, dtype in CASES:
    q, q_pos, k, k_pos, weights = make_inputs(B, H, H_kv, W, T, D, device="cuda", dtype=dtype)
    out = recent_attention_scores(q, q_pos, k, k_pos, weights, D ** -0.5)
    ref = recent_attention_scores_torch(q, q_pos, k, k_pos, weights, D ** -0.5)
    torch.cuda.synchronize()
    err = (out - ref).abs()
    rel_rms = float(((out - ref).pow(2).mean() / ref.pow(2).mean()).sqrt())
    # same top-k choice is what matters for selection
    k_top = max(1, T // 2)
    same = float((torch.topk(out, k_top).indices.sort().values == torch.topk(ref, k_top).indices.sort().values).float().mean())
    t_kernel = torch.utils.benchmark.Timer("f(q,qp,k,kp,w,s)", globals=dict(
        f=recent_attention_scores, q=q, qp=q_pos, k=k, kp=k_pos, w=weights, s=D ** -0.5)).blocked_autorange().median
    t_twin = torch.utils.benchmark.Timer("f(q,qp,k,kp,w,s)", globals=dict(
        f=recent_attention_scores_torch, q=q, qp=q_pos, k=k, kp=k_pos, w=weights, s=D ** -0.5)).blocked_autorange().median
    rows.append({"case": f"B{B}-H{H}-Hkv{H_kv}-W{W}-T{T}-D{D}-{str(dtype)[6:]}", "max_abs_err": float(err.max()),
                 "rel_rms_err": rel_rms, "topk_overlap": same, "kernel_ms": t_kernel * 1e3, "twin_ms": t_twin * 1e3})
    print(rows[-1], flush=True)

# the RecurFormer scan: fla's chunk_simple_gla (what scan() runs on CUDA) against our chunked twin
from pyramid_core.recurformer.rnn import scan, scan_backend, scan_chunked  # noqa: E402

scan_rows = []
for B, H, T, D in [(1, 7, 1024, 64), (1, 7, 32768, 64), (8, 4, 4096, 64), (1, 4, 32768, 64)]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", generator=gen) * D ** -0.25 for _ in range(3))
    log_a = -torch.rand(B, H, T, device="cuda", generator=gen) * 0.2
    out, out_s = scan(q, k, v, log_a)
    ref, ref_s = scan_chunked(q.double(), k.double(), v.double(), log_a.double())
    rel = float((out.double() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    rel_s = float((out_s.double() - ref_s).pow(2).mean().sqrt() / ref_s.pow(2).mean().sqrt())
    timer = lambda f: torch.utils.benchmark.Timer("f(q, k, v, a)", globals=dict(  # noqa: E731
        f=f, q=q, k=k, v=v, a=log_a)).blocked_autorange().median * 1e3
    scan_rows.append({"case": f"B{B}-H{H}-T{T}-D{D}-float32", "backend": scan_backend(q.device),
                      "rel_rms_err_output": rel, "rel_rms_err_state": rel_s,
                      "kernel_ms": timer(scan), "twin_ms": timer(scan_chunked)})
    print(scan_rows[-1], flush=True)
json.dump({"environment": environment(), "cases": rows, "scan_cases": scan_rows}, open(sys.argv[1], "w"), indent=1)
