"""Write the held-out reading tasks the project evaluates on (pyramid_core/assets/reading_eval.jsonl.gz).

    python3 training/make_reading_eval.py --data .data --tokenizer pyramid_core/assets/embedded

Only held-out parts are used: templates, names, places and objects of `Pools(split="heldout")`, and the
corpus's validation documents as the natural text (training reads neither). Seeded, so the file is
reproducible from the same corpus and tokenizer.

- single: one fact, on a grid of prompt lengths x depths (--per-cell tasks in each cell);
- multi, two, story, quote: --per-cell tasks at each length, depth random.

`length` is the prompt's budget in tokens (document, question and 'Answer:' fit within it, with room
for the answer in a 4096-token context); pyramid_core/reading.py reads the file.
"""

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reading_tasks import TaskMaker  # noqa: E402
from train_embedded import read_docs, read_sources, reading_texts  # noqa: E402

LENGTHS = (512, 1024, 2048, 3072, 4096)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
OTHER_KINDS = ("multi", "two", "story", "quote")
QUESTION_ROOM = 48  # the question and 'Answer:'
ANSWER_ROOM = 24  # the answer's tokens (pyramid_core.reading.MAX_ANSWER_TOKENS) within the length


def fitted_task(maker: TaskMaker, kind: str, length: int, depth: float | None = None) -> dict:
    """One task whose prompt (BOS included) leaves ANSWER_ROOM of a `length`-token budget."""
    target = length - QUESTION_ROOM
    while True:  # lengths are estimated from sentences: shrink the document until the prompt fits
        task = maker.make(kind, target, depth)
        n = maker.ntokens(task.prompt) + 1  # + BOS
        if n <= length - ANSWER_ROOM:
            break
        target -= n - (length - ANSWER_ROOM) + 8
    return {"kind": kind, "length": length, "depth": depth, "prompt": task.prompt, "answer": task.answer,
            "prompt_tokens": n}


def build(maker: TaskMaker, per_cell: int) -> list[dict]:
    rows = []

    def add(kind, length, depth=None):
        rows.append(fitted_task(maker, kind, length, depth))

    for length in LENGTHS:
        for depth in DEPTHS:
            for _ in range(per_cell):
                add("single", length, depth)
        for kind in OTHER_KINDS:
            for _ in range(per_cell):
                add(kind, length)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".data")
    ap.add_argument("--tokenizer", default="pyramid_core/assets/embedded")
    ap.add_argument("--out", default="pyramid_core/assets/reading_eval.jsonl.gz")
    ap.add_argument("--per-cell", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    docs = read_docs(os.path.join(args.data, "corpus_val.txt"))
    texts = reading_texts(docs, read_sources(os.path.join(args.data, "corpus_val_sources.txt"), len(docs)))
    rows = build(TaskMaker(texts, tok, "heldout", args.seed), args.per_cell)
    lengths = {n: [r["prompt_tokens"] for r in rows if r["length"] == n] for n in LENGTHS}
    print("prompt tokens per length budget:", {n: (min(v), max(v)) for n, v in lengths.items()})
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{len(rows)} tasks from {len(texts)} held-out documents -> {args.out} "
          f"({os.path.getsize(args.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
