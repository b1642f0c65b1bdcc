"""PyramidInfer's decode cut, kernel by kernel, at Table 1's largest batch (140 rows of the 13B shape, fp16, a
512 + 256 generation: ~77 voters, a layer holding 200-640 slots, its newest ~93 scored), on the GPU machine:

- the scorer (kernels/scores_triton.py) for each voter block x warps; with --before F also the scorer of
  another revision, F a copy of its scores_triton.py (`git show REV:pyramid_core/kernels/scores_triton.py`),
  at the settings it ran with;
- the kept slots' move (kernels/move_slots.py): the Triton kernel for each block of slots x warps, and its
  torch twin (a gather and a copy back, for the keys and for the values).

Microseconds a call, 20 calls captured in one CUDA graph, the median of 3 replays (decode_split_sweep.timed_us).

    python benchmarks/cut_kernels_sweep.py out.json [--before F]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json

import torch

from benchmarks.decode_split_sweep import timed_us
from pyramid_core.bench import harness
from pyramid_core.kernels import move_slots_triton, scores_triton
from pyramid_core.kernels.move_slots import move_slots_torch

B, H, D, W, SCORED, MOVED = 140, 40, 128, 77, 93, 85


def scorer_inputs(T: int):
    dev, dt = "cuda", torch.float16
    q = torch.randn(B, H, W + 32, D, device=dev, dtype=dt)[:, :, 5:W + 5]  # a window of the voters' buffer
    k = torch.randn(B, H, T + 100, D, device=dev, dtype=dt)[:, :, :T]     # the cache's view
    k_pos = torch.arange(T, device=dev).repeat(B, 1)
    q_pos = torch.arange(T - W, T, device=dev).repeat(B, 1)
    return q, q_pos, k, k_pos, torch.rand(B, W, device=dev)


def scorer_rows(T: int, before) -> list[dict]:
    inputs = scorer_inputs(T)
    defaults, rows = (scores_triton.VOTER_BLOCK, scores_triton.WARPS), []
    for block, warps in itertools.product((64, 128), (4, 8)):
        scores_triton.VOTER_BLOCK, scores_triton.WARPS = block, warps
        us = timed_us(lambda: scores_triton.recent_attention_scores_triton(*inputs, D ** -0.5, SCORED), calls=20)
        rows.append({"T": T, "scorer": "this", "voter_block": block, "warps": warps, "us": us})
    if before is not None:
        us = timed_us(lambda: before.recent_attention_scores_triton(*inputs, D ** -0.5, SCORED), calls=20)
        rows.append({"T": T, "scorer": "before", "us": us})
    scores_triton.VOTER_BLOCK, scores_triton.WARPS = defaults
    return rows


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


def load_before(path: str | None):
    """Another revision's scores_triton.py as a module of this package (its relative imports resolve here)."""
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("pyramid_core.kernels.scores_triton_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--before", help="another revision's kernels/scores_triton.py")
    args = parser.parse_args()
    before = load_before(args.before)
    rows = [row for T in (200, 400, 640) for row in scorer_rows(T, before) + move_rows(T)]
    for row in rows:
        print(row, flush=True)
    out = {"environment": harness.environment(), "batch": B, "heads": H, "head_dim": D, "voters": W,
           "scored": SCORED, "moved": MOVED, "before": args.before, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
