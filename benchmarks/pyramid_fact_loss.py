"""Where PyramidInfer loses a single fact that SnapKV keeps, layer by layer, on the embedded model.

    PYTHONPATH=. python3 benchmarks/pyramid_fact_loss.py benchmarks/pyramid_fact_loss   # CPU, ~4 minutes

`retrieval_embedded.md` has PyramidInfer at a KV share of 0.5 answering 20% of the single-fact tasks where
SnapKV answers 95% and streaming 52.5%. Both keep what the prompt's last tokens attend to. Two measures:

1. Held by layer: after the prefill, the share of the answer's own tokens in the document (the fact's
   value, e.g. the town) that each layer's cache still holds, over the suite's tasks whose fact is not
   in the last fifth of the prompt (depth < 1). Read it beside where each method chooses: PyramidInfer
   in every layer of the prefill from that layer's recent-window attention, dropping the rest from the
   hidden states (so a token a layer drops is gone from every deeper layer); SnapKV after the prefill,
   each layer on its own, from the last 32 queries' pooled attention.
2. Voter width: PyramidInfer's voters are its whole recent window, the last 20% of the prompt (the
   official configs' recent_ratio 0.2), of which the question is a few tokens. The suite's 40 tasks
   again, with recent_ratio 0.2 / 0.05 / 0.02, at the defaults and at a budget of 0.5.
"""

import json
import sys
import time

import torch

sys.path.insert(0, ".")
from pyramid_core import reading, retrieval  # noqa: E402
from pyramid_core.bench.harness import environment  # noqa: E402
from pyramid_core.budget import Budget, solve  # noqa: E402
from pyramid_core.engine import generate  # noqa: E402
from pyramid_core.models import load_model  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402

HELD_MODES = (("pyramid", None), ("pyramid", 0.5), ("snapkv", 0.5), ("h2o", 0.5), ("streaming", 0.5))
RECENT_RATIOS = (0.2, 0.05, 0.02)


def answer_positions(tokenizer, ids: list[int], answer: str) -> list[int] | None:
    """The prompt positions of the answer's tokens where the document states it (its last occurrence)."""
    for text in (" " + answer, answer):
        want = tokenizer(text, add_special_tokens=False).input_ids
        for start in range(len(ids) - len(want), -1, -1):
            if ids[start:start + len(want)] == want:
                return list(range(start, start + len(want)))
    return None


def held_by_layer(lm, tasks: list[dict], mode: str, budget: float | None) -> dict:
    """Per layer, the mean share of the answer's tokens held after the prefill."""
    policy, totals, counted = make_policy(mode, {}), None, 0
    for task in tasks:
        ids = lm.tokenizer(task["prompt"], return_tensors="pt").input_ids
        where = answer_positions(lm.tokenizer, ids[0].tolist(), task["answer"])
        if where is None:
            continue
        solved = policy if budget is None else solve(policy, Budget(share=budget), ids.shape[1],
                                                       reading.MAX_ANSWER_TOKENS, lm.config.num_hidden_layers)
        prefill = next(iter(generate(lm, ids, policy=solved, max_new_tokens=1)))
        held = [len(set(where) & set(kept)) / len(where) for kept in prefill.kept_positions]
        totals = held if totals is None else [a + b for a, b in zip(totals, held)]
        counted += 1
    return {"mode": mode, "budget": budget, "tasks": counted, "held": [round(t / counted, 3) for t in totals]}


def voter_row(lm, tasks: list[dict], recent_ratio: float, budget: float | None) -> dict:
    result = retrieval.run_point(lm, tasks, retrieval.Point("pyramid", budget, {"recent_ratio": recent_ratio}))
    return {"recent_ratio": recent_ratio, "budget": budget, "right": sum(r for r in result["right"] if r),
            "tasks": result["count"]["single"], "share_reached": round(result["kv_share"], 3),
            "refusal": result["refusal"]}


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# Where PyramidInfer loses the fact: {result['model']}", "",
             f"{env['date']}, {env.get('gpu', 'cpu (2 threads)')}, torch {env['torch']}, transformers "
             f"{env['transformers']}, float32; {result['seconds']:.0f} s.", "",
             "## The answer's tokens held after the prefill, per layer", "",
             f"Mean over the retrieval suite's {result['held'][0]['tasks']} single-fact tasks whose fact is not "
             "in the last fifth of the prompt.", "",
             "| mode | budget | " + " | ".join(f"L{i}" for i in range(len(result["held"][0]["held"]))) + " |",
             "| --- | --- | " + " | ".join("---" for _ in result["held"][0]["held"]) + " |"]
    for r in result["held"]:
        held = " | ".join(f"{h:.0%}" for h in r["held"])
        lines.append(f"| {r['mode']} | {r['budget'] or 'defaults'} | {held} |")
    lines += ["", "## PyramidInfer's voter window", "", "The retrieval suite's 40 single-fact tasks, greedy, "
              "exact answer.", "", "| recent_ratio (voters: share of the prompt) | KV budget | share reached | right |",
              "| --- | --- | --- | --- |"]
    for r in result["voters"]:
        lines.append(f"| {r['recent_ratio']} | {r['budget'] or 'defaults'} | {r['share_reached']:.3f} | "
                     f"{r['right']}/{r['tasks']} ({r['right'] / r['tasks']:.1%}) |")
    return "\n".join(lines) + "\n"


def main():
    out, start = sys.argv[1], time.perf_counter()
    torch.set_num_threads(2)
    lm = load_model("embedded", device="cpu")
    tasks = retrieval.select_tasks(reading.load_tasks(), retrieval.DEFAULT)
    early = [t for t in tasks if t["depth"] < 1]
    result = {"model": "embedded", "environment": environment(),
              "held": [held_by_layer(lm, early, mode, budget) for mode, budget in HELD_MODES],
              "voters": [voter_row(lm, tasks, rr, b) for rr in RECENT_RATIOS for b in (None, 0.5)]}
    result["seconds"] = time.perf_counter() - start
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
