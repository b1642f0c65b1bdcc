"""Ask the studio's several-facts sample about every person of its list, the towns rotated and the list reversed.

    python3 training/list_probe.py embedded .run16/embedded .run18/embedded   # benchmarks/reading_list_probe.md

The sample ("Lena lives in Ashford. Tobias Crane lives in Kelmouth. ...") asks about one person. A model that
reads the list answers every person's own town in every arrangement; one that leans on a town it favours (runs
15-18 answered "Ashford" to the sample at every snapshot) answers that town whoever is asked and wherever the
town stands. 4 rotations x 2 orders x 4 people = 32 questions, greedy, full cache, as the sample is scored.
Each town is also scored as the whole answer, so that a model whose favourite town wins every greedy answer
still shows whether it ranks the right town above the rest.
"""
import argparse
import collections
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyramid_core import evaluate, reading  # noqa: E402
from pyramid_core.resources import asset  # noqa: E402

SAMPLE = "several facts"
FACT = re.compile(r"([A-Z][a-z]+(?: [A-Z][a-z]+)?) lives in ([A-Z][a-z]+)\.")


def sample_prompt() -> str:
    return next(s["prompt"] for s in json.loads(asset("sample_prompts.json").read_text()) if s["name"] == SAMPLE)


def variants(prompt: str) -> list[dict]:
    """Every arrangement's questions: {rotation, order, asked, answer, prompt}. Rotation r gives person i the
    town of person i + r; "reversed" states the facts last to first. The text around the facts stays."""
    facts = FACT.findall(prompt)
    people, towns = [p for p, _ in facts], [t for _, t in facts]
    start = prompt.index(f"{people[0]} lives in")
    end = prompt.index(f"{people[-1]} lives in {towns[-1]}.") + len(f"{people[-1]} lives in {towns[-1]}.")
    head, tail = prompt[:start], prompt[end:].split("Question:", 1)[0]
    out = []
    for r in range(len(people)):
        pairs = [(p, towns[(i + r) % len(towns)]) for i, p in enumerate(people)]
        for order, listed in (("stored", pairs), ("reversed", pairs[::-1])):
            text = head + " ".join(f"{p} lives in {t}." for p, t in listed) + tail
            for person, town in pairs:
                out.append({"rotation": r, "order": order, "asked": person, "answer": town,
                            "prompt": f"{text}Question: Where does {person} live?\nAnswer:"})
    return out


def probe(lm) -> list[dict]:
    """Every variant with what the loaded model `lm` answered ("given") and whether it is right."""
    tasks = [{**t, "kind": SAMPLE, "length": 0} for t in variants(sample_prompt())]
    results = reading.score(lm, tasks, None, batch=4)
    return [{**t, "given": r["given"], "right": r["right"]} for t, r in zip(tasks, results)]


def answer_logprobs(lm, rows: list[dict]) -> list[dict[str, float]]:
    """Per question, the log-probability of each town as the whole answer (teacher-forced, full cache): whether the
    right town outscores the others, a favoured town aside, even where the greedy answer is that favourite."""
    out = []
    for r in rows:
        prompt = lm.tokenizer(r["prompt"], return_tensors="pt").input_ids
        scores = {}
        for _, town in FACT.findall(r["prompt"]):  # the towns its list states
            answer = lm.tokenizer(" " + town, add_special_tokens=False, return_tensors="pt").input_ids
            logits = evaluate.continuation_logits(lm, prompt, answer)
            scores[town] = evaluate.token_logprobs(logits, answer.to(logits.device)).sum().item()
        out.append(scores)
    return out


def ahead_but_favourite(rows: list[dict], logprobs: list[dict[str, float]]) -> tuple[str, int]:
    """(the most given answer, the questions whose right town outscores every town but that one)."""
    favourite = collections.Counter(r["given"] for r in rows).most_common(1)[0][0]
    ahead = sum(all(lp[r["answer"]] > v for t, v in lp.items() if t not in (r["answer"], favourite))
                for r, lp in zip(rows, logprobs) if r["answer"] != favourite)
    return favourite, ahead


def shares(lm) -> tuple[float, float]:
    """(share answered right, share of the questions whose right town is not the favourite where it leads the
    other towns, the favourite aside): the probe in two numbers, for a run's rank table."""
    rows = probe(lm)
    favourite, ahead = ahead_but_favourite(rows, answer_logprobs(lm, rows))
    return sum(r["right"] for r in rows) / len(rows), ahead / sum(r["answer"] != favourite for r in rows)


def markdown(name: str, rows: list[dict], logprobs: list[dict[str, float]] | None = None) -> str:
    right = sum(r["right"] for r in rows)
    given = collections.Counter(r["given"] for r in rows)
    lines = [f"## {name}: {right} of {len(rows)} right", "",
             "Answers given, most frequent first: " + ", ".join(f"{g!r} x{n}" for g, n in given.most_common()), ""]
    if logprobs:
        favourite, ahead = ahead_but_favourite(rows, logprobs)
        asked = sum(r["answer"] != favourite for r in rows)
        others = len(logprobs[0]) - 2
        lines += [f"Where the right town is not {favourite!r}, it outscores the other {others} towns as the answer "
                  f"({favourite!r} aside) in {ahead} of {asked} questions ({asked / (others + 1):.0f} by chance).", ""]
    lines += ["| rotation | order | " + " | ".join(r["asked"] for r in rows[:4]) + " |",
              "| --- | --- |" + " --- |" * 4]
    for k in range(0, len(rows), 4):
        cells = [f"{r['answer']}: " + ("ok" if r["right"] else repr(r["given"])) for r in rows[k:k + 4]]
        lines.append(f"| {rows[k]['rotation']} | {rows[k]['order']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories (or 'embedded')")
    args = ap.parse_args()
    from pyramid_core.models import load_model

    for model in args.models:
        lm = load_model(model)
        rows = probe(lm)
        print(markdown(model, rows, answer_logprobs(lm, rows)))


if __name__ == "__main__":
    main()
