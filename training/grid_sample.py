"""Score a model on a fresh sample of the held-out single-fact grid: N tasks in each (length, depth) cell.

The stored evaluation (pyramid_core/assets/reading_eval.jsonl.gz, make_reading_eval.py) holds 16 single facts a
cell. That is too few to judge one cell against 90%: 90% of 16 is 14.4, so a cell passes only at 15 or 16 right,
and a model right 95% of the time in every cell passes all 25 cells about once in 200 tries (binomial). This
draws more tasks a cell from the same held-out pools and validation texts, with another seed, so that a cell's
score says something about the model rather than about the draw.

    python3 training/grid_sample.py --model embedded --per-cell 40 --seed 11 --out benchmarks/reading_grid_sample

Full cache, greedy, one task at a time, the project's exact-answer rule (pyramid_core/reading.py). Writes OUT.json
(every cell's right answers and misses) and OUT.md (the grid, with each cell's 95% Wilson interval).
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_reading_eval import DEPTHS, LENGTHS, fitted_task  # noqa: E402
from reading_tasks import TaskMaker  # noqa: E402
from train_embedded import read_docs, read_sources, reading_texts  # noqa: E402

from pyramid_core import reading  # noqa: E402
from pyramid_core.bench import harness  # noqa: E402
from pyramid_core.models import load_model  # noqa: E402


def wilson(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion right / n."""
    p, d = right / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def score_cell(lm, maker: TaskMaker, length: int, depth: float, per_cell: int, stops) -> dict:
    right, misses = 0, []
    for _ in range(per_cell):
        task = fitted_task(maker, "single", length, depth)
        (said,), _ = reading.answer_batch(lm, [task["prompt"]], None, stops)
        if reading.answer_matches(said, task["answer"]):
            right += 1
        else:
            question = task["prompt"].rsplit("Question:", 1)[1].split("\n")[0].strip()
            misses.append({"answer": task["answer"], "said": said.strip(), "question": question})
    return {"length": length, "depth": depth, "right": right, "n": per_cell, "misses": misses}


def table(cells: list[dict]) -> str:
    lines = ["| length \\ depth | " + " | ".join(str(d) for d in DEPTHS) + " |", "| --- " * (len(DEPTHS) + 1) + "|"]
    for length in LENGTHS:
        lines.append(f"| {length} | " + " | ".join(cell_text(c) for c in cells if c["length"] == length) + " |")
    return "\n".join(lines)


def cell_text(cell: dict) -> str:
    """'36/40 (90%, 77%-96%)': right of n, the share, its 95% interval."""
    low, high = wilson(cell["right"], cell["n"])
    return f"{cell['right']}/{cell['n']} ({cell['right'] / cell['n']:.0%}, {low:.0%}-{high:.0%})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default=".data")
    ap.add_argument("--per-cell", type=int, default=40)
    ap.add_argument("--seed", type=int, default=11, help="not the stored file's 2026")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = ap.parse_args()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    docs = read_docs(os.path.join(args.data, "corpus_val.txt"))
    texts = reading_texts(docs, read_sources(os.path.join(args.data, "corpus_val_sources.txt"), len(docs)))
    maker = TaskMaker(texts, lm.tokenizer.backend_tokenizer, "heldout", args.seed)
    stops = reading.newline_ids(lm.tokenizer)
    torch.manual_seed(0)
    cells = []
    for length in LENGTHS:
        for depth in DEPTHS:
            cells.append(score_cell(lm, maker, length, depth, args.per_cell, stops))
            print(f"{length} x {depth}: {cells[-1]['right']}/{args.per_cell}", flush=True)
    right, n = sum(c["right"] for c in cells), sum(c["n"] for c in cells)
    result = {"environment": harness.environment(), "model": args.model, "device": args.device,
              "dtype": args.dtype, "seed": args.seed, "per_cell": args.per_cell, "right": right, "n": n,
              "cells": cells}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"{right}/{n} single facts right ({right / n:.1%})\n\n{table(cells)}\n")


if __name__ == "__main__":
    main()
