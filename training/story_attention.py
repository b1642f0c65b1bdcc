"""Where the answer's first token is read from, layer by layer, in the held-out "who" stories.

    python -m pyramid_core eval --model .run18/embedded --reading --reading-kinds story --modes baseline \
        --device cpu --out /tmp/stories
    python3 training/story_attention.py .run18/embedded /tmp/stories.json   # benchmarks/reading_story_attention.md

For each "who" story (sort_misses.story_asked), the last prompt token's attention (the token that predicts the
answer's first token; mean over heads, full cache) is summed over two sentences of the document: the asked
event's (the one holding the right answer) and, where the model named someone else, that person's. A model that
finds the asked event but copies the wrong name looks at the asked sentence; one that finds the wrong event looks
at the other.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyramid_core import reading, recording  # noqa: E402
from pyramid_core.engine import generate  # noqa: E402
from pyramid_core.trace import LayerAttention  # noqa: E402

from sort_misses import story_asked  # noqa: E402  (training/, beside this file)


def sentence_of(document: str, words: str) -> tuple[int, int] | None:
    """(start, end) characters of the sentence of `document` that holds `words` first, or None."""
    at = document.find(words)
    if at < 0 or not words:
        return None
    start = max(document.rfind(".", 0, at), document.rfind("\n", 0, at)) + 1
    end = document.find(".", at)
    return start, (end + 1 if end >= 0 else len(document))


def last_token_attention(lm, prompt: str) -> tuple[list[tuple[int, int]], list[LayerAttention]]:
    """The prompt's tokens' character offsets, and each layer's attention of its last token (the prefill's record
    with one query: recording.PREFILL_RECORD_QUERIES is set to 1 for the call)."""
    enc = lm.tokenizer(prompt, return_offsets_mapping=True, return_tensors="pt")
    offsets = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
    queries, recording.PREFILL_RECORD_QUERIES = recording.PREFILL_RECORD_QUERIES, 1
    try:
        record = next(generate(lm, enc.input_ids.to(lm.device), max_new_tokens=1, record_attention=True))
    finally:
        recording.PREFILL_RECORD_QUERIES = queries
    return offsets, record.attention


def span_mass(offsets: list[tuple[int, int]], attention: LayerAttention, span: tuple[int, int]) -> float:
    """The layer's attention (mean over heads) on the tokens that lie within characters span = (start, end)."""
    inside = {j for j, (a, b) in enumerate(offsets) if span[0] <= a < b <= span[1]}
    weights = torch.tensor(attention.weights).mean(0)
    return float(sum(w for p, w in zip(attention.positions, weights.tolist()) if p in inside))


def who_rows(lm, tasks: list[dict], results: list[dict]) -> list[dict]:
    """Per "who" story: right or not, and per layer (mass on the asked sentence, on the wrongly named one's)."""
    rows = []
    for task, result in zip(tasks, results, strict=True):
        if result["kind"] != "story" or story_asked(task["prompt"]) != "who":
            continue
        document = task["prompt"].rsplit("\n\nQuestion:", 1)[0]
        asked = sentence_of(document, result["answer"])
        wrong = None if result["right"] else sentence_of(document, result["given"])
        offsets, layers = last_token_attention(lm, task["prompt"])
        rows.append({"right": result["right"],
                     "layers": [(span_mass(offsets, a, asked) if asked else None,
                                 span_mass(offsets, a, wrong) if wrong else None) for a in layers]})
    return rows


def markdown(rows: list[dict]) -> str:
    right, wrong = [r for r in rows if r["right"]], [r for r in rows if not r["right"] and r["layers"][0][1] is not None]
    lines = [f"| layer | right answers ({len(right)}): on the asked sentence | misses ({len(wrong)}): on the asked "
             "sentence | misses: on the named person's sentence | misses looking more at the asked one |",
             "| --- | --- | --- | --- | --- |"]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    for layer in range(len(rows[0]["layers"])):
        at = [r["layers"][layer] for r in wrong]
        lines.append(f"| {layer} | {mean([r['layers'][layer][0] for r in right]):.3f} | {mean([a for a, _ in at]):.3f} "
                     f"| {mean([w for _, w in at]):.3f} | {sum(a > w for a, w in at)} of {len(at)} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("result", help="an `eval --reading --json` result of that model with the stories in it")
    args = ap.parse_args()
    from pyramid_core.models import load_model

    scored = json.loads(Path(args.result).read_text())
    tasks = reading.load_tasks(kinds=scored["settings"].get("kinds"))
    print(markdown(who_rows(load_model(args.model), tasks, scored["modes"]["baseline"]["results"])))


if __name__ == "__main__":
    main()
