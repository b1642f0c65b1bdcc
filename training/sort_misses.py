"""Sort the full cache's misses on the held-out reading tasks by what the model answered instead.

    python3 training/sort_misses.py benchmarks/reading_embedded_gpu.json > benchmarks/reading_run12_misses.md

Reads an `eval --reading --json` result and the tasks it scored (`reading_eval.jsonl.gz`, in the same order),
and prints, per kind, how many misses fall in each class with a few examples: what the next training data
should change follows from which class dominates.
"""

import argparse
import collections
import difflib
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyramid_core.resources import asset  # noqa: E402

EXCLUSIVE = 'the first word of an exclusive phrasing ("Nobody but X drives ...")'


def miss_class(answer: str, given: str, document: str) -> str:
    if given.split()[:1] == ["Nobody"]:
        return EXCLUSIVE
    if answer in given:
        return "the answer with words around it (span boundary)"
    if given and given in answer:
        return "part of the answer"
    if difflib.SequenceMatcher(None, answer, given).ratio() >= 0.6:
        return "a near copy of the answer (a letter or a word off)"
    if given and given in document:
        return "another span of the document (another fact's value, another person or place)"
    return "words not in the document"


def sorted_misses(results: list[dict], tasks: list[dict], kinds: tuple[str, ...]) -> dict:
    """{kind: {class: [(answer, given), ...]}} over the results that are wrong."""
    out = {kind: collections.defaultdict(list) for kind in kinds}
    for result, task in zip(results, tasks, strict=True):
        if result["kind"] in out and not result["right"]:
            given = result["given"].strip()
            document = task["prompt"].rsplit("Question:", 1)[0]
            out[result["kind"]][miss_class(result["answer"], given, document)].append((result["answer"], given))
    return out


def markdown(misses: dict, examples: int = 4) -> str:
    lines = []
    for kind, classes in misses.items():
        total = sum(len(v) for v in classes.values())
        lines += [f"## {kind}: {total} misses", "", "| what the model answered | misses | examples (asked -> answered) |",
                  "| --- | --- | --- |"]
        for name, pairs in sorted(classes.items(), key=lambda kv: -len(kv[1])):
            shown = "; ".join(f"{a!r} -> {g!r}" for a, g in pairs[:examples])
            lines.append(f"| {name} | {len(pairs)} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", help="an `eval --reading --json` result file")
    ap.add_argument("--mode", default="baseline")
    ap.add_argument("--kinds", default="single,story")
    args = ap.parse_args()
    results = json.load(open(args.result))["modes"][args.mode]["results"]
    with gzip.open(asset("reading_eval.jsonl.gz"), "rt") as f:
        tasks = [json.loads(line) for line in f]
    print(markdown(sorted_misses(results, tasks, tuple(args.kinds.split(",")))))


if __name__ == "__main__":
    main()
