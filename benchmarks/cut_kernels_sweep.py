"""PyramidInfer's decode cut, kernel by kernel, at Table 1's largest batch (134 rows of the 13B shape, fp16, a
512 + 256 generation: ~77 voters, a layer holding 200-640 slots, its newest ~93 scored), on the GPU machine:

- the scorer (kernels/scores_triton.py) for each voter block x warps of its first pass;
- the kept slots' move (kernels/move_slots.py): the Triton kernel and its torch twin (a gather and a copy
  back, for the keys and for the values).

Microseconds a call, 20 calls captured in one CUDA graph, the median of 3 replays (decode_split_sweep.timed_us).

    python benchmarks/cut_kernels_sweep.py out.json
"""

from __future__ import annotations

import itertools
import json
import sys

import torch

from benchmarks.decode_split_sweep import timed_us
from pyramid_core.bench import harness
from pyramid_core.kernels import scores_triton
from pyramid_core.kernels.move_slots import move_slots_torch
from pyramid_core.kernels.move_slots_triton import move_slots_triton

B, H, D, W, SCORED, MOVED = 134, 40, 128, 77, 93, 85


def scorer_rows(T: int) -> list[dict]:
    dev, dt = "cuda", torch.float16
    q = torch.randn(B, H, W + 32, D, device=dev, dtype=dt)[:, :, 5:W + 5]  # a window of the voters' buffer
    k = torch.randn(B, H, T + 100, D, device=dev, dtype=dt)[:, :, :T]     # the cache's view
    k_pos = torch.arange(T, device=dev).repeat(B, 1)
    q_pos = torch.arange(T - W, T, device=dev).repeat(B, 1)
    weights = torch.rand(B, W, device=dev)
    rows = []
    for block, warps in itertools.product((64, 128), (4, 8)):
        scores_triton.VOTER_BLOCK, scores_triton.LSE_WARPS = block, warps
        us = timed_us(lambda: scores_triton.recent_attention_scores_triton(q, q_pos, k, k_pos, weights, D ** -0.5,
                                                                           SCORED), calls=20)
        rows.append({"T": T, "voter_block": block, "lse_warps": warps, "us": us})
    return rows


def move_rows(T: int) -> list[dict]:
    k, v = (torch.randn(B, H, T + 100, D, device="cuda", dtype=torch.float16)[:, :, :T] for _ in range(2))
    start = T - SCORED
    index = torch.stack([torch.randperm(SCORED, device="cuda")[:MOVED].sort().values + start for _ in range(B)])
    return [{"T": T, "move": name, "us": timed_us(lambda: fn(k, v, index, start), calls=20)}
            for name, fn in (("triton", move_slots_triton), ("torch twin", move_slots_torch))]


def main() -> None:
    rows = [row for T in (200, 400, 640) for row in scorer_rows(T) + move_rows(T)]
    for row in rows:
        print(row, flush=True)
    out = {"environment": harness.environment(), "batch": B, "heads": H, "head_dim": D, "voters": W,
           "scored": SCORED, "moved": MOVED, "rows": rows}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
