"""`bench roofline`: how near the memory's speed the baseline's batch-1 decode step runs (issue 19).

Each row runs twice over a reserved KV: with the per-layer graphs (graphs.py) and with the whole step as
one graph (step_graphs.py), in the same process.

At batch 1 a decode step has to read every weight it multiplies by once and every cached key and value
once; nothing else it touches is large. Its floor is therefore (weight bytes + KV bytes) / the card's
memory bandwidth, and bytes / the measured step time is the bandwidth it achieves (gpt-fast reports
the same "achieved GB/s"). The share of the card's bandwidth is taken against its datasheet figure
(CARD_BANDWIDTH_GBS, by device name), and a device-to-device copy measured in the same process says
what the memory sustains in practice. A profile of a few decode steps adds how much of a step the GPU
is busy (the sum of its kernels' times over the step's wall time): a step far above the time of its
kernels waits on the host's launches, one whose kernels fill it is bound by those kernels.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .. import step_graphs
from ..engine import generate
from ..metrics import decode_tokens_per_s
from ..policies.full import FullPolicy
from . import harness

FUSED_DEFAULT = step_graphs.FUSED_STEP

# datasheet memory bandwidth, GB/s, by the name torch reports (first match wins)
CARD_BANDWIDTH_GBS = (("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350),
                      ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935), ("A100", 1555), ("L40S", 864))


def card_bandwidth_gbs(name: str) -> float | None:
    return next((gbs for key, gbs in CARD_BANDWIDTH_GBS if key in name), None)


def weight_bytes_read(model: torch.nn.Module) -> int:
    """Bytes of the weights a decode step reads: every parameter, but of an input embedding table that
    is not also the output layer only the rows looked up (one a sequence: left out here)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total if embed is head else total - embed.numel() * embed.element_size()


def kv_bytes_read(config, batch: int, tokens: float, itemsize: int) -> float:
    """Bytes of keys and values a step reads when each sequence holds `tokens` in every layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * tokens * batch * itemsize


def roofline_row(weights: int, kv: float, step_s: float, card_gbs: float | None, copy_gbs: float) -> dict:
    """The bandwidth a step of `step_s` seconds achieves reading weights + kv bytes, and its shares."""
    achieved = (weights + kv) / step_s / 1e9
    return {"weight_gb": round(weights / 1e9, 3), "kv_gb_per_step": round(kv / 1e9, 4),
            "decode_step_ms": round(step_s * 1e3, 3), "achieved_gbs": round(achieved, 1),
            "card_gbs": card_gbs, "roofline_share": round(achieved / card_gbs, 3) if card_gbs else None,
            "copy_gbs": round(copy_gbs, 1), "share_of_copy": round(achieved / copy_gbs, 3),
            "floor_ms": round((weights + kv) / (card_gbs * 1e9) * 1e3, 3) if card_gbs else None}


def copy_bandwidth_gbs(gigabytes: float = 2.0, repeats: int = 10) -> float:
    """What the memory sustains: a device-to-device copy reads and writes every byte."""
    src = torch.empty(int(gigabytes * 1e9) // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * src.numel() * src.element_size() * repeats / (time.perf_counter() - start) / 1e9


def gpu_busy_share(lm, ids: torch.Tensor, steps: int = 32) -> float:
    """Kernel time over wall time of `steps` warm decode steps (the prefill and the first decode step,
    which may capture the step graph, run before the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    run = generate(lm, ids, policy=FullPolicy(), max_new_tokens=steps + 2, reserve_kv=True)
    next(run), next(run)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in run:
            pass
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernels_us = sum(e.self_device_time_total for e in prof.key_averages())
    return kernels_us / 1e6 / wall


def measure(lm, batch: int, prompt: int, new_tokens: int, card_gbs: float | None, copy_gbs: float,
            step_graph: bool) -> dict:
    """The baseline's warm decode steps over a reserved KV (graphs captured by a first run): median step
    time, the bandwidth it achieves reading the weights and the mean KV held over the steps. step_graph:
    the whole step as one graph (step_graphs.py), else the per-layer graphs (graphs.py)."""
    step_graphs.FUSED_STEP = step_graph
    ids = harness.random_prompts(batch, prompt, lm.config.vocab_size)
    list(generate(lm, ids, policy=FullPolicy(), max_new_tokens=new_tokens, reserve_kv=True))  # capture, compile
    records = list(generate(lm, ids, policy=FullPolicy(), max_new_tokens=new_tokens, reserve_kv=True))
    warm = [i for i in range(1, len(records)) if not records[i].warmup_s]
    step_s = statistics.median(records[i].step_time_s for i in warm)
    tokens = prompt + statistics.mean(warm)  # a decode step i reads the prompt and i earlier new tokens
    row = {"path": "whole-step graph" if step_graph else "per-layer graphs", "batch": batch, "prompt": prompt,
           "new_tokens": new_tokens,
           "tokens_per_s": round(decode_tokens_per_s(records), 1),
           **roofline_row(weight_bytes_read(lm.model), kv_bytes_read(lm.config, batch, tokens, lm.dtype.itemsize),
                          step_s, card_gbs, copy_gbs)}
    row["gpu_busy_share"] = round(gpu_busy_share(lm, ids), 3)
    return row


def suite_roofline(args) -> dict:
    """The baseline's batch-1 decode step on the Llama-2-7B shape (bf16), 1k and 8k prompts, against the
    card's memory bandwidth (issue 19: at least 60%)."""
    shape = (args.shapes or "llama2-7b").split(",")[0]
    prompts = [int(p) for p in (args.prompts or "1024,8192").split(",")]
    batches = [int(b) for b in (args.batches or "1").split(",")]
    lm = harness.random_model(shape, dtype=torch.bfloat16)
    card = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    rows = [measure(lm, b, p, args.new_tokens, card_bandwidth_gbs(card), copy_gbs, graph)
            for b in batches for p in prompts for graph in (False, True)]
    step_graphs.FUSED_STEP = FUSED_DEFAULT
    results = {"environment": harness.environment(), "shape": shape, "dtype": "bfloat16", "rows": rows}
    harness.write(results, Path(args.out), f"roofline_{shape.replace('.', '')}", table(rows))
    return results


def table(rows: list[dict]) -> str:
    head = ("| path | batch | prompt | tokens/s | step ms | floor ms | weights GB | KV GB a step | achieved GB/s "
            "| of the card | of a copy | GPU busy |")
    lines = [head, "| --- " * 12 + "|"]
    for r in rows:
        share = f"{r['roofline_share']:.1%}" if r["roofline_share"] else "-"
        floor = "-" if r["floor_ms"] is None else r["floor_ms"]
        lines.append(f"| {r['path']} | {r['batch']} | {r['prompt']} | {r['tokens_per_s']} | {r['decode_step_ms']} | "
                     f"{floor} | {r['weight_gb']} | {r['kv_gb_per_step']} | {r['achieved_gbs']} | "
                     f"{share} | {r['share_of_copy']:.1%} | {r['gpu_busy_share']:.1%} |")
    return "\n".join(lines)
