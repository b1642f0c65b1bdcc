"""The decode-attention kernel at Table 1's largest batches (kernels/decode_triton.py), on the GPU machine:
a whole step's 40 layers of the 13B shape (40 heads of 128, fp16) as the whole-step graph reads them,
every reserved slot with the unwritten ones masked, for PyramidInfer 45% (its plan's reservation and
tokens per layer at decode step 128) and for the baseline (768 slots, 640 written), each setting of the
kernel's block and warps, told the count of written slots (as the graph tells it) or not (then it reads
every reserved slot). benchmarks/decode_batch_sweep_2026-12-02.json also holds the kernel before it loaded
by index ("bounded": false there: loads masked by the slots' positions) and pipeline stages 1 and 2 (no
difference). Milliseconds a step: the 40 calls captured 10 times in one CUDA graph, the median of 3
replays (decode_split_sweep.timed_us); GB/s over the written slots' keys and values, beside a copy of
2 GiB (what the card moves at all).

    python benchmarks/decode_batch_sweep.py out.json [PYRAMID_ROWS [BASELINE_ROWS]]
    python benchmarks/decode_batch_sweep.py out.json newest   # PyramidInfer's step at 140-164 rows with its
        # voters' logits (128 wide), and at 160 without them (newest_sweep)
    python benchmarks/decode_batch_sweep.py out.json tail     # row by row across 156-164, with and without
        # the voters' logits, and split in two (tail_sweep: where a step's time jumps between 158 and 160 rows)
    python benchmarks/decode_batch_sweep.py out.json splits   # the baseline's 74 rows in 1-4 splits, PyramidInfer's
        # 160 in 3 and 4, its 140 in 1 and 2 (splits_sweep)
"""

from __future__ import annotations

import itertools
import json
import sys

import torch

from benchmarks.decode_split_sweep import timed_us
from pyramid_core.bench import harness
from pyramid_core.kernels import decode_triton
from pyramid_core.policies.registry import preset_policy

H, D, LAYERS, STEP, REPEATS = 40, 128, 40, 128, 10


def timed_ms(calls) -> float:
    """One pass over `calls` in GPU milliseconds, inside a CUDA graph as the whole-step graph runs them."""
    return timed_us(lambda: [call() for call in calls], REPEATS) / 1e3


def layer_shapes(method: str) -> list[tuple[int, int]]:
    """(reserved slots, written slots) of each layer at decode step STEP of Table 1's 512 + 256."""
    if method == "baseline":
        return [(768, 512 + STEP)] * LAYERS
    policy = preset_policy("pyramid", "table1-45", 512, 256, LAYERS)
    plan = policy.planned_layer_tokens(512, 256, LAYERS)
    growth = policy.planned_growth([512], 256, LAYERS)
    return [(held + grown, written) for held, grown, written in zip(plan[0], growth, plan[STEP])]


def step_calls(shapes: list[tuple[int, int]], rows: int, bounded: bool, newest: int = 0,
               splits: int | None = None) -> tuple[list, int]:
    """The kernel's calls for one step over per-layer buffers of these shapes, and the written bytes.
    bounded: the kernel is told how many slots are written (its loads skip the rest by index, not by the
    slots' positions). newest: the width of PyramidInfer's voter logits each call also writes (0: none).
    splits: programs per (row, head) (None: the kernel's launch plan)."""
    dev, dt = "cuda", torch.float16
    calls, nbytes = [], 0
    q = torch.randn(rows, H, 1, D, device=dev, dtype=dt)
    for cap, written in shapes:
        k, v = (torch.randn(rows, H, cap, D, device=dev, dtype=dt) for _ in range(2))
        pos = torch.full((rows, cap), -1, device=dev, dtype=torch.long)
        pos[:, :written] = torch.arange(written, device=dev)
        q_pos = torch.full((rows, 1), written - 1, device=dev)
        bound = torch.tensor([written], device=dev) if bounded else None
        rows_out = (torch.empty(rows, H, newest, device=dev), torch.empty(rows, H, device=dev)) if newest else None
        calls.append(lambda k=k, v=v, pos=pos, q_pos=q_pos, bound=bound, rows_out=rows_out:
                     decode_triton.decode_attention_triton(q, k, v, q_pos, pos, D ** -0.5, None, splits,
                                                           written=bound, newest=rows_out))
        nbytes += 2 * rows * H * written * D * 2
    return calls, nbytes


def sweep(method: str, rows: int, bounded: bool, newest: int = 0, settings=None,
          splits: int | None = None) -> list[dict]:
    shapes = layer_shapes(method)
    calls, nbytes = step_calls(shapes, rows, bounded, newest, splits)
    copy_src = torch.empty(2 ** 30, device="cuda", dtype=torch.float16)
    copy_dst = torch.empty_like(copy_src)
    copy_gb_s = 2 * 2 * 2 ** 30 / timed_ms([lambda: copy_dst.copy_(copy_src)]) / 1e6  # reads and writes 2 GiB
    del copy_src, copy_dst
    out = []
    for block, warps in settings or itertools.product((64, 128, 256), (2, 4, 8)):
        decode_triton.BLOCK_T, decode_triton.NUM_WARPS = block, warps
        try:
            ms = timed_ms(calls)
        except Exception as err:  # a setting out of registers or shared memory
            out.append({"method": method, "bounded": bounded, "block": block, "warps": warps, "error": str(err)[:200]})
            continue
        out.append({"method": method, "rows": rows, "bounded": bounded, "newest": newest, "splits": splits,
                    "block": block, "warps": warps, "ms_step": round(ms, 3), "GB/s": round(nbytes / ms / 1e6, 1),
                    "copy_GB/s": round(copy_gb_s, 1)})
        print(out[-1], flush=True)
    return out


def at_default(method: str, rows: int, newest: int, splits: int | None = None) -> list[dict]:
    """sweep() at the kernel's own block and warps, told the written count."""
    return sweep(method, rows, True, newest, [(decode_triton.BLOCK_T, decode_triton.NUM_WARPS)], splits)


def newest_sweep() -> list[dict]:
    """PyramidInfer's step at rows around Table 1's largest batch, writing its voters' logits (128 wide) as
    the engine does, and at 160 rows without them: the kernel's time against the rows it serves."""
    cases = [(rows, 128) for rows in (140, 148, 152, 156, 158, 160, 164)] + [(160, 0)]
    return [row for rows, newest in cases for row in at_default("pyramid", rows, newest)]


def tail_sweep() -> list[dict]:
    """PyramidInfer's step row by row across 156-164 with and without its voters' logits, and with each
    (row, head) split in two programs at 148 and 158-162: whether the jump from 158 to 160 rows (11.65 against
    12.39 ms, decode_newest_sweep_2026-12-03_branch.json) follows the rows x heads programs past a whole
    round of the GPU (a last round of few programs, each as long as its serial loop) or the logits alone.
    Unsplit is asked for (splits 1; "splits": null in the record, made before the launch plan split the
    logits' kernel in two)."""
    cases = [(rows, newest, 1) for newest in (128, 0) for rows in range(156, 165)] + \
        [(rows, 128, 2) for rows in (148, 158, 160, 162)]
    return [row for rows, newest, splits in cases for row in at_default("pyramid", rows, newest, splits)]


def splits_sweep() -> list[dict]:
    """Splits per (row, head) forced: the baseline's step at its 74 rows (no logits) unsplit and in 2-4,
    PyramidInfer's at 160 rows in 3 and 4 (tail_sweep has 2) and at 140 unsplit and in 2 (unsplit: "splits"
    null in the record, before the launch plan split the logits' kernel in two)."""
    cases = [("baseline", 74, 0, splits) for splits in (1, 2, 3, 4)] + \
        [("pyramid", 160, 128, splits) for splits in (3, 4)] + [("pyramid", 140, 128, splits) for splits in (1, 2)]
    return [row for method, rows, newest, splits in cases for row in at_default(method, rows, newest, splits)]


def settings_sweep(pyramid_rows: int = 138, baseline_rows: int = 74) -> list[dict]:
    """Every block and warp setting for PyramidInfer's step and the baseline's, told the written count and not."""
    rows = []
    for method, batch in (("pyramid", pyramid_rows), ("baseline", baseline_rows)):
        for bounded in (False, True):
            rows += sweep(method, batch, bounded)
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    named = {"newest": newest_sweep, "tail": tail_sweep, "splits": splits_sweep}
    chosen = named.get(sys.argv[2]) if len(sys.argv) > 2 else None
    found = chosen() if chosen else settings_sweep(*map(int, sys.argv[2:4]))
    with open(sys.argv[1], "w") as f:
        json.dump({"environment": harness.environment(), "rows": found}, f, indent=1)
