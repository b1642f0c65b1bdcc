"""Sort the full cache's misses on the held-out reading tasks by what the model answered instead.

    python3 training/sort_misses.py benchmarks/reading_embedded_gpu.json > benchmarks/reading_run12_misses.md

Reads an `eval --reading --json` result and the tasks it scored (`reading_eval.jsonl.gz`, in the same order,
only its `--reading-kinds` where it had them), and prints, per kind, how many misses fall in each class with a few
examples: what the next training data should change follows from which class dominates. Stories are also counted
by what their question asks (who, how many, where), the binding each needs, and every kind by prompt length (a
length the training never reached shows as a fall at the long end).
"""

import argparse
import collections
import difflib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyramid_core import reading  # noqa: E402
from pyramid_core.resources import asset  # noqa: E402

from reading_tasks import STORY_QUESTIONS  # noqa: E402  (training/, beside this file)

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


# what a held-out story question asks, by its template's words before the first slot ("Which person ", ...)
STORY_ASKED = {kind: tuple(t.split("{")[0] for t in templates) for kind, templates in STORY_QUESTIONS.items()}


def story_asked(prompt: str) -> str:
    question = prompt.rsplit("Question: ", 1)[1].split("\n", 1)[0]
    return next((kind for kind, starts in STORY_ASKED.items() if question.startswith(starts)), "other")


def story_rights(results: list[dict], tasks: list[dict]) -> dict[str, list[bool]]:
    """{what the question asks: [right, ...]} over the stories."""
    rights = collections.defaultdict(list)
    for result, task in zip(results, tasks, strict=True):
        if result["kind"] == "story":
            rights[story_asked(task["prompt"])].append(result["right"])
    return dict(rights)


def story_asks_table(results: list[dict], tasks: list[dict]) -> str:
    """The stories' accuracy by what their question asks: which binding the model lacks."""
    rights = story_rights(results, tasks)
    lines = ["## story, by what the question asks", "", "| asks | right | of | share |", "| --- | --- | --- | --- |"]
    for kind, marks in sorted(rights.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {kind} | {sum(marks)} | {len(marks)} | {sum(marks) / len(marks):.1%} |")
    return "\n".join(lines + [""])


def length_table(results: list[dict]) -> str:
    """Right / asked per kind and prompt length (tokens, at most): where along the context each kind fails."""
    cells = collections.defaultdict(list)
    for result in results:
        cells[result["kind"], result["length"]].append(result["right"])
    kinds = sorted({kind for kind, _ in cells})
    lengths = sorted({length for _, length in cells})
    lines = ["## every kind, by prompt length", "", "| kind | " + " | ".join(map(str, lengths)) + " |",
             "| --- | " + " | ".join("---" for _ in lengths) + " |"]
    for kind in kinds:
        marks = [cells.get((kind, n), []) for n in lengths]
        lines.append(f"| {kind} | " + " | ".join(f"{sum(m)}/{len(m)}" if m else "-" for m in marks) + " |")
    return "\n".join(lines + [""])


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
    ap.add_argument("--tasks", default=str(asset("reading_eval.jsonl.gz")),
                    help="the tasks the result scored (its --reading-file; its --reading-kinds are read from it)")
    args = ap.parse_args()
    scored = json.load(open(args.result))
    results = scored["modes"][args.mode]["results"]
    tasks = reading.load_tasks(args.tasks, kinds=scored["settings"].get("kinds"))
    print(markdown(sorted_misses(results, tasks, tuple(args.kinds.split(",")))))
    if any(r["kind"] == "story" for r in results):
        print(story_asks_table(results, tasks))
    print(length_table(results))


if __name__ == "__main__":
    main()
