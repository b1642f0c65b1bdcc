"""PyramidInfer's decode cut's kernel at Table 1's largest batch (140 rows of the 13B shape, fp16, a 512 + 256
generation: a layer holding 200-640 slots, its newest ~93 cut), on the GPU machine: the kept slots' move
(kernels/move_slots.py), the Triton kernel for each block of slots x warps, and its torch twin (a gather and
a copy back, for the keys and for the values). (Until 2026-12-03 a cut also scored its voters' queries
against the keys, and this swept that scorer too: cut_kernels_sweep_2026-12-02*.json. A cut now reads the
rows its voters cast, policies/voter_rows.py.)

Microseconds a call, 20 calls captured in one CUDA graph, the median of 3 replays (decode_split_sweep.timed_us).

    python benchmarks/cut_kernels_sweep.py out.json
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from benchmarks.decode_split_sweep import timed_us
from pyramid_core.bench import harness
from pyramid_core.kernels import move_slots_triton
from pyramid_core.kernels.move_slots import move_slots_torch

B, H, D, SCORED, MOVED = 140, 40, 128, 93, 85


def move_rows(T: int) -> list[dict]:
    k, v = (torch.randn(B, H, T + 100, D, device="cuda", dtype=torch.float16)[:, :, :T] for _ in range(2))
    start = T - SCORED
    index = torch.stack([torch.randperm(SCORED, device="cuda")[:MOVED].sort().values + start for _ in range(B)])
    defaults, rows = (move_slots_triton.BLOCK, move_slots_triton.WARPS), []
    for block, warps in itertools.product((32, 64, 128), (4, 8)):
        move_slots_triton.BLOCK, move_slots_triton.WARPS = block, warps
        us = timed_us(lambda: move_slots_triton.move_slots_triton(k, v, index, start), calls=20)
        rows.append({"T": T, "move": "triton", "block": block, "warps": warps, "us": us})
    move_slots_triton.BLOCK, move_slots_triton.WARPS = defaults
    rows.append({"T": T, "move": "torch twin", "us": timed_us(lambda: move_slots_torch(k, v, index, start), calls=20)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    rows = [row for T in (200, 400, 640) for row in move_rows(T)]
    for row in rows:
        print(row, flush=True)
    out = {"environment": harness.environment(), "batch": B, "heads": H, "head_dim": D, "scored": SCORED,
           "moved": MOVED, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
