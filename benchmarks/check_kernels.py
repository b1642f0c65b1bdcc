"""Run on the GPU machine: the Triton scorer, the Triton decode attention and the fla scan against their
PyTorch twins, to JSON (errors and times; for decode attention, the bandwidth each reaches too).

    python benchmarks/check_kernels.py benchmarks/kernel_check.json [scores] [decode] [scan]
"""

import itertools
import json
import sys

import torch
import torch.utils.benchmark

sys.path.insert(0, ".")
from pyramid_core.bench.harness import environment  # noqa: E402
from pyramid_core.kernels.scores import recent_attention_scores, recent_attention_scores_torch  # noqa: E402
from tests.test_scores import make_inputs  # noqa: E402

CASES = [(1, 4, 4, 3, 20, 64, torch.float16), (2, 32, 8, 103, 500, 128, torch.bfloat16),
         (3, 40, 40, 17, 1000, 128, torch.float16), (2, 14, 2, 65, 4097, 64, torch.bfloat16),
         (32, 40, 40, 103, 768, 128, torch.float16), (1, 32, 32, 1639, 8192, 128, torch.float16)]

SECTIONS = sys.argv[2:] or ["scores", "decode", "scan"]
rows = []
for B, H, H_kv, W, T, D, dtype in CASES if "scores" in SECTIONS else []:
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

# decode attention: the Triton kernel against the engine's SDPA path, with the holes of compressed rows
# (reference) and as the engine calls SDPA for full rows (flash, no mask: the speed to beat)
from torch.nn.attention import sdpa_kernel  # noqa: E402

from pyramid_core.attention import ATTENTION_BACKENDS, attention  # noqa: E402
from pyramid_core.kernels import decode, decode_triton  # noqa: E402
from pyramid_core.kernels.decode_triton import decode_attention_triton  # noqa: E402
from tests.test_decode_kernel import positions_with_holes  # noqa: E402

DECODE_CASES = [(116, 40, 40, 350, 128, torch.float16), (32, 40, 40, 768, 128, torch.float16),
                (56, 40, 40, 768, 128, torch.float16), (8, 40, 40, 768, 128, torch.float16),
                (1, 40, 40, 768, 128, torch.float16), (1, 32, 8, 8192, 128, torch.bfloat16),
                (8, 14, 2, 4096, 64, torch.bfloat16), (1, 14, 2, 32768, 64, torch.bfloat16)]
decode_rows = []
for B, H, H_kv, T, D, dtype in DECODE_CASES if "decode" in SECTIONS else []:
    gen = torch.Generator().manual_seed(0)
    kb, vb = (torch.randn(B, H_kv, T + 32, D, generator=gen).to("cuda", dtype) for _ in range(2))
    k, v = kb[:, :, :T], vb[:, :, :T]  # a cache view: spare slots after the used ones
    q = torch.randn(B, H, 1, D, generator=gen).to("cuda", dtype)
    k_pos = positions_with_holes(B, T, gen)
    q_pos = k_pos[:, -1:].clone()
    out = decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, None)
    ref = attention(q.float(), k.float(), v.float(), q_pos, k_pos, scale=D ** -0.5, holes=True, window=None,
                    causal_square=False, decode_kernel=False)
    full_pos = torch.arange(T, device="cuda").repeat(B, 1)
    time_ms = lambda f: torch.utils.benchmark.Timer("f()", globals=dict(f=f)).blocked_autorange(  # noqa: E731
        min_run_time=0.5).median * 1e3
    kernel = lambda: decode_attention_triton(q, k, v, full_pos[:, -1:], full_pos, D ** -0.5, None)  # noqa: E731
    t_kernel = time_ms(kernel)
    with sdpa_kernel(ATTENTION_BACKENDS):  # the SDPA path, with the backends the engine allows
        t_sdpa = time_ms(lambda: attention(q, k, v, full_pos[:, -1:], full_pos, scale=D ** -0.5, holes=False,
                                           window=None, causal_square=False, decode_kernel=False))
        t_sdpa_holes = time_ms(lambda: attention(q, k, v, q_pos, k_pos, scale=D ** -0.5, holes=True, window=None,
                                                 causal_square=False, decode_kernel=False))
    sweep, chosen = {}, (decode_triton.BLOCK_T, decode_triton.NUM_WARPS)
    for block_t, warps in itertools.product((32, 64, 128), (2, 4, 8)):
        decode_triton.BLOCK_T, decode_triton.NUM_WARPS = block_t, warps
        sweep[f"{block_t}x{warps}"] = round(time_ms(kernel), 4)
    decode_triton.BLOCK_T, decode_triton.NUM_WARPS = chosen
    engine_uses_kernel = decode.kernel_fits(q, k)
    gb = 2 * k.numel() * k.element_size() / 1e9
    decode_rows.append({"case": f"B{B}-H{H}-Hkv{H_kv}-T{T}-D{D}-{str(dtype)[6:]}",
                        "max_abs_err": float((out.float() - ref).abs().max()),
                        "kernel_ms": t_kernel, "sdpa_flash_ms": t_sdpa, "sdpa_masked_ms": t_sdpa_holes,
                        "kernel_tb_s": gb / t_kernel, "sdpa_flash_tb_s": gb / t_sdpa,
                        "kernel_ms_by_block_and_warps": sweep, "engine_uses_kernel": engine_uses_kernel})
    print(decode_rows[-1], flush=True)

# the RecurFormer scan: fla's chunk_simple_gla (what scan() runs on CUDA) against our chunked twin
from pyramid_core.recurformer.rnn import scan, scan_backend, scan_chunked  # noqa: E402

scan_rows = []
for B, H, T, D in [(1, 7, 1024, 64), (1, 7, 32768, 64), (8, 4, 4096, 64), (1, 4, 32768, 64)] if "scan" in SECTIONS else []:
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
json.dump({"environment": environment(), "cases": rows, "decode_cases": decode_rows, "scan_cases": scan_rows},
          open(sys.argv[1], "w"), indent=1)
