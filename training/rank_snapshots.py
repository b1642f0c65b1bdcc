"""Score a training run's snapshots on what the model card promises, to pick the one to ship.

For each model directory: the project's held-out reading evaluation with the full cache (every task of
pyramid_core/assets/reading_eval.jsonl.gz, greedy) and the continuation perplexity on heldout.txt
(6 windows of 1024 + 128 tokens, the measure of benchmarks/quality_embedded.md). Run on the GPU machine:

    python3 training/rank_snapshots.py /tmp/embedded/snapshots/step-* /tmp/embedded --out /tmp/results/rank
    python3 training/rank_snapshots.py --pick /tmp/results/rank.json --max-ppl 37.0   # prints the best one

`--pick` takes several rank files (snapshots scored one at a time while the training ran, or on two GPUs)
and, with `--out`, writes their rows together as one table.

Each row also splits the stories by what their question asks (who, how many, where; sort_misses.story_rights)
and holds the several-facts probe (list_probe.py): the share of its 32 questions answered right, and the share
whose right town leads the others with the favoured one set aside.

Each model also answers the studio's sample prompts (pyramid_core/assets/sample_prompts.json; full cache,
greedy, one at a time), as tests/test_sample_prompts.py asks of the shipped model: the studio's first click
shows the first of them.

The pick: among models within the perplexity ceiling that answer every sample prompt, the one with the most
single-fact and story questions right (the two reading targets of the model card); none prints nothing and
exits 1. Rows scored before the samples were (no "samples" key) are not held to them. `--beat FILE` (the rank
file of the run's `--init`, the model it would replace) also passes over every model that reads no better than
that one, so a run that made its starting model worse picks nothing.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyramid_core import evaluate, reading  # noqa: E402
from pyramid_core.models import load_model  # noqa: E402
from pyramid_core.resources import asset  # noqa: E402

import list_probe  # noqa: E402  (training/, beside this file)
from sort_misses import story_rights  # noqa: E402


def heldout_ppl(lm, windows: int = 6) -> float:
    ids = lm.tokenizer(asset("heldout.txt").read_text(), add_special_tokens=False).input_ids
    data = evaluate.build_data(ids, lm.tokenizer.bos_token_id, windows, 1, 1024, 128, 1)
    nlls = []
    for ctx, cont in zip(data.contexts, data.continuations):
        logits = evaluate.continuation_logits(lm, ctx[None], cont[None], None)
        nlls.append(-evaluate.token_logprobs(logits, cont[None].to(logits.device)).mean().item())
    return evaluate.perplexity(sum(nlls) / len(nlls))


def sample_answers(lm) -> dict[str, dict]:
    """Per sample prompt, what the model said and whether it is right: a question's answer line, a
    continuation's first word. Kept in the rank's JSON, so that a miss can be read after the machine is gone."""
    stops, answers = reading.newline_ids(lm.tokenizer), {}
    for sample in json.loads(asset("sample_prompts.json").read_text()):
        (text,), _ = reading.answer_batch(lm, [sample["prompt"]], None, stops)
        if sample["kind"] == "question":
            right = reading.answer_matches(text, sample["answer"])
        else:
            words = text.split()
            right = bool(words) and words[0].strip(",.;:") == sample["answer"]
        answers[sample["name"]] = {"said": text, "right": right}
    return answers


def missed(answers: dict[str, dict]) -> list[str]:
    """Names of the sample prompts answered wrong (sample_answers)."""
    return [name for name, answer in answers.items() if not answer["right"]]


def sample_misses(lm) -> list[str]:
    return missed(sample_answers(lm))


def score(model_dir: str, tasks: list[dict], device: str, dtype: str) -> dict:
    lm = load_model(model_dir, device=device, dtype=dtype)
    results = reading.score(lm, tasks, batch=16)
    summary = reading.summary(results)
    worst = min(v for row in summary["grid"].values() for v in row.values())
    answers = sample_answers(lm)
    stories = story_rights(results, tasks)
    list_right, list_ahead = list_probe.shares(lm)
    return {"model": model_dir, "ppl": heldout_ppl(lm), "accuracy": summary["accuracy"],
            "worst_single_cell": worst, "grid": summary["grid"],
            "story_asks": {kind: sum(marks) / len(marks) for kind, marks in stories.items()},
            "list_probe": list_right, "list_probe_ahead": list_ahead,
            "samples_missed": missed(answers),
            "sample_answers": {name: answer["said"] for name, answer in answers.items()}}


def markdown(rows: list[dict]) -> str:
    """One row a model. The stories' split by what they ask and the list probe are '-' in rows scored before
    they were (older rank files)."""
    kinds = sorted(rows[0]["accuracy"])
    lines = ["| model | heldout ppl | " + " | ".join(kinds) + " | story who / count / where | several-facts list: "
             "right / ahead | worst single cell | sample prompts missed |",
             "| --- | --- | " + " | ".join("---" for _ in kinds) + " | --- | --- | --- | --- |"]
    for r in rows:
        acc = " | ".join(f"{r['accuracy'][k]:.1%}" for k in kinds)
        split = r.get("story_asks", {})
        asks = " / ".join(f"{split[k]:.0%}" if k in split else "-" for k in ("who", "count", "where"))
        probe = f"{r['list_probe']:.0%} / {r['list_probe_ahead']:.0%}" if "list_probe" in r else "-"
        missed = ", ".join(r["samples_missed"]) or "none" if "samples_missed" in r else "-"
        lines.append(f"| {r['model']} | {r['ppl']:.2f} | {acc} | {asks} | {probe} | {r['worst_single_cell']:.0%} "
                     f"| {missed} |")
    return "\n".join(lines) + "\n"


def reads(row: dict) -> float:
    """What the pick ranks by: the share of single-fact plus story questions answered right."""
    return row["accuracy"]["single"] + row["accuracy"]["story"]


def pick(rows: list[dict], max_ppl: float, beat: dict | None = None) -> dict | None:
    """The model to ship: within the ceiling, every sample answered, reading best and, given `beat`, better."""
    within = [r for r in rows if r["ppl"] <= max_ppl and not r.get("samples_missed")
              and (beat is None or reads(r) > reads(beat))]
    return max(within, key=reads, default=None)


def write(rows: list[dict], out: str):
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(rows, indent=1))
    Path(out + ".md").write_text(markdown(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    ap.add_argument("--pick", nargs="+", help="rank .json files: print the model to ship instead of scoring")
    ap.add_argument("--max-ppl", type=float, default=37.0, help="--pick: the perplexity ceiling")
    ap.add_argument("--beat", help="--pick: a rank .json of one model (the run's --init) that the pick must "
                                   "out-read")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N tasks (a quick look)")
    args = ap.parse_args()
    if args.pick:
        rows = [r for f in args.pick for r in json.loads(Path(f).read_text())]
        if args.out:
            write(rows, args.out)
        beat = json.loads(Path(args.beat).read_text())[0] if args.beat else None
        best = pick(rows, args.max_ppl, beat)
        if best is None:
            sys.exit(1)
        print(best["model"])
        return
    tasks = reading.load_tasks(limit=args.limit)
    rows = []
    for m in args.models:
        rows.append(score(m, tasks, args.device, args.dtype))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    write(rows, args.out)
    print(markdown(rows))


if __name__ == "__main__":
    main()
