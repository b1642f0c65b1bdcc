"""The split decode-attention kernel's settings at batch 1 (kernels/decode_triton.py), on the GPU machine:
one query a head over a reservation of T slots of which `written` hold tokens, the 7B shape's 32 heads of
128, bf16, for each block size x warps x programs per SM; SDPA's flash kernel over the written slots
alone (what the per-layer path runs) beside them. Microseconds a call: 200 calls captured in one CUDA
graph, the median of 3 replays.

    python benchmarks/decode_split_sweep.py out.json [T:WRITTEN[:logits] ...]

The cases default to 1280:1080 and 8448:8250; `:logits` times decode_attention_and_logits, H2O's one pass
(e.g. 206:206:logits, a 1k prompt's 20% on the 7B shape), instead of decode_attention_triton.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from pyramid_core.bench import harness
from pyramid_core.kernels import decode_triton


def timed_us(fn, calls: int = 200) -> float:
    """A call's GPU time inside a CUDA graph, as the whole-step graph runs it: timed as Python launches,
    a call of ~15 us measured ~90 us of the host's launch work (a first sweep, 2026-12-01)."""
    fn()  # compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    times = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return round(statistics.median(times), 2)


def case(T: int, written: int, logits: bool = False, H: int = 32, D: int = 128) -> list[dict]:
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(1, H, 1, D, device=dev, dtype=dt)
    k, v = (torch.randn(1, H, T, D, device=dev, dtype=dt) for _ in range(2))
    pos = torch.full((1, T), -1, device=dev, dtype=torch.long)
    pos[0, :written] = torch.arange(written, device=dev)
    q_pos = torch.tensor([[written - 1]], device=dev)
    rows = [{"T": T, "written": written, "kernel": "sdpa flash, written slots",
             "us": timed_us(lambda: F.scaled_dot_product_attention(q, k[:, :, :written], v[:, :, :written]))}]
    for bt, warps, per_sm in itertools.product((32, 64, 128), (2, 4, 8), (4, 8, 16)):
        decode_triton.BLOCK_T = decode_triton.LONG_SPLIT_BLOCK_T = bt  # a long cache's block too
        decode_triton.NUM_WARPS, decode_triton.PROGRAMS_PER_SM = warps, per_sm
        decode_triton.MIN_BLOCKS_PER_SPLIT = 1
        if logits:
            us = timed_us(lambda: decode_triton.decode_attention_and_logits(q, k, v, q_pos, pos, D ** -0.5))
        else:
            us = timed_us(lambda: decode_triton.decode_attention_triton(q, k, v, q_pos, pos, D ** -0.5, None))
        rows.append({"T": T, "written": written, "us": us, "GB/s": round(2 * written * H * D * 2 / us / 1e3, 1),
                     "kernel": f"triton{' with logits' if logits else ''} BT {bt} warps {warps} programs/SM {per_sm}"})
    return rows


if __name__ == "__main__":
    cases = [c.split(":") for c in sys.argv[2:]] or [["1280", "1080"], ["8448", "8250"]]
    rows = [row for c in cases for row in case(int(c[0]), int(c[1]), c[2:] == ["logits"])]
    for row in rows:
        print(row)
    with open(sys.argv[1], "w") as f:
        json.dump({"environment": harness.environment(), "rows": rows}, f, indent=1)
